import assert from 'node:assert/strict'
import type { TestContext } from 'node:test'
import type { Config } from '../../src/config.js'
import { assertNoUserOverLimit, assertSoldOutExactly } from './fault-kit.js'
import { buildTestApp, isolatedConfig, sql, TestClock } from './helpers.js'

export const USERS = 500
export const ITEMS = 200
const LIMIT = 3

/**
 * The test file's isolated configuration for the stampede (on whatever Redis `overrides` name).
 * No fault is injected here, so the dependency timeouts are generous: the 500 clients share one
 * process with the service, and on a CPU-starved host (load average 8 on 2 cores) one checkout
 * once got a 503 `sale_restoring`, most likely a reply read past the 2 s Redis command timeout
 * (not reproduced in eight runs at load 5-15).
 */
export const stampedeConfig = (t: TestContext, overrides: Partial<Config> = {}): Config =>
  isolatedConfig(t, { SALE_ITEMS: ITEMS, USER_LIMIT: LIMIT, CHECKOUT_TTL_SECONDS: 60, REDIS_COMMAND_TIMEOUT_MS: 15_000, PG_QUERY_TIMEOUT_MS: 15_000, ...overrides })

/**
 * USERS users stampede an ITEMS-item sale over real HTTP, abandon some holds, then buy until
 * sold out; afterwards Postgres must show an exact sell-out, no item sold twice, no user over
 * the limit, one attempt row per request, and Redis must agree. Run by concurrency.test.ts on
 * the local Redis and by redis-cluster.test.ts on a Redis Cluster.
 */
export async function stampede (t: TestContext, config: Config): Promise<void> {
  const clock = new TestClock(Date.parse('2031-03-04T13:05:00.000Z'))
  const app = await buildTestApp(t, config, clock)
  const base = await app.listen({ host: '127.0.0.1', port: 0 })

  let checkoutRequests = 0
  const statuses = new Map<string, number>()
  const tally = (key: string) => statuses.set(key, (statuses.get(key) ?? 0) + 1)
  const post = async (path: string) => {
    const res = await fetch(`${base}${path}`, { method: 'POST' })
    const body = await res.json() as { error?: string, code?: string }
    tally(`${path.slice(1, 9)} ${res.status} ${body.error ?? ''}`.trim())
    assert.ok(res.status < 500, `${path} -> ${res.status} ${JSON.stringify(body)}`)
    return { status: res.status, body }
  }
  const randomItem = () => 1 + Math.floor(Math.random() * ITEMS)

  // Phase 1: everyone at once, overlapping items; 30% of reservations are abandoned.
  await Promise.all(Array.from({ length: USERS }, async (_, u) => {
    for (let round = 0; round < 4; round++) {
      checkoutRequests++
      const { status, body } = await post(`/checkout?user_id=user${u}&id=${randomItem()}`)
      if (status === 200 && Math.random() < 0.7) await post(`/purchase?code=${body.code}`)
    }
  }))

  // The abandoned holds expire and return to stock.
  clock.advance(60_000)
  // Phase 2: keep buying until the sale answers sold_out to everyone.
  await Promise.all(Array.from({ length: USERS }, async (_, u) => {
    for (let round = 0; round < 50; round++) {
      checkoutRequests++
      const { status, body } = await post(`/checkout?user_id=user${u}&id=${randomItem()}`)
      if (status === 200) await post(`/purchase?code=${body.code}`)
      else if (body.error === 'sold_out' || body.error === 'user_limit_reached') return
    }
  }))
  t.diagnostic(JSON.stringify(Object.fromEntries([...statuses].sort())))

  await assertSoldOutExactly(config, ITEMS)
  await assertNoUserOverLimit(config, LIMIT)

  const [attempts] = await sql<{ n: number }>(app, 'SELECT count(*)::int AS n FROM checkout_attempts')
  assert.equal(attempts?.n, checkoutRequests, 'one attempt row per checkout request')

  const [orphans] = await sql<{ n: number }>(app,
    `SELECT count(*)::int AS n FROM purchases p JOIN checkout_attempts a ON a.code = p.code
     WHERE a.outcome <> 'accepted' OR a.user_id <> p.user_id OR a.item_id <> p.item_id`)
  assert.equal(orphans?.n, 0, 'every purchase redeems its own accepted checkout')

  const redis = (await app.inject('/')).json().sale
  assert.equal(redis.sold, ITEMS, 'Redis and Postgres agree on the number sold')
  assert.equal(redis.left, 0)
}
