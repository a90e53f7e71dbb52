import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Inventory } from '../../src/sale/inventory.js'
import { canSwitchUser, dedicatedPostgres, query, startService, waitFor } from '../support/fault-kit.js'
import { buildTestApp, checkout, isolatedConfig, purchase, sql, TestClock } from '../support/helpers.js'

/**
 * The opening instant: sales are prepared ahead and opened by the clock inside the decision
 * scripts, so XX:00:00.000 meets an open sale whatever happens to timers or to Postgres at XX:59.
 */

const H13 = Date.parse('2031-03-04T13:00:00.000Z')
const H14 = Date.parse('2031-03-04T14:00:00.000Z')

test('a stampede across 14:00:00.000: every request is decided in the sale of its own instant', async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: 5000, USER_LIMIT: 10, CHECKOUT_TTL_SECONDS: 600, RATE_LIMIT_PER_USER: 0 })
  // The clock runs from 13:59:59.500 to 14:00:00.500 at a third of real speed while 200
  // connections hammer (opened before the clock starts, so a loaded machine still sends plenty
  // before the hour).
  const startsAt = H14 - 500
  let t0: number | null = null
  const now = () => t0 === null ? startsAt : startsAt + Math.floor((performance.now() - t0) / 3)
  const app = await buildTestApp(t, config, new TestClock(0, now))
  await app.listen({ host: '127.0.0.1', port: 0 })
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  const post = async (path: string) => {
    const res = await fetch(`${url}${path}`, { method: 'POST' })
    return { status: res.status, body: await res.json() as { code?: string, sale_id?: number, error?: string } }
  }

  const unredeemed13: string[] = []
  const statuses = new Map<number, number>()
  await Promise.all(Array.from({ length: 200 }, () => fetch(`${url}/health`).then((res) => res.arrayBuffer())))
  t0 = performance.now()
  await Promise.all(Array.from({ length: 200 }, async () => {
    while (now() < H14 + 500) {
      const user = `u${Math.floor(Math.random() * 1000)}`
      const item = 1 + Math.floor(Math.random() * 5000)
      const res = await post(`/checkout?user_id=${user}&id=${item}`)
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
      assert.ok(res.status < 500, JSON.stringify(res))
      assert.notEqual(res.body.error, 'no_active_sale')
      if (res.status !== 200) continue
      const code = res.body.code as string
      if (Math.random() < 0.5) {
        const bought = await post(`/purchase?code=${code}`)
        assert.ok([200, 410].includes(bought.status), JSON.stringify(bought))
      } else if (res.body.sale_id === 1) {
        unredeemed13.push(code)
      }
    }
  }))

  const [first, second] = await sql<{ id: string, starts_at: Date }>(app, 'SELECT id, starts_at FROM sales ORDER BY id')
  assert.equal(first?.starts_at.getTime(), H13)
  assert.equal(second?.starts_at.getTime(), H14)
  const outcomes = await sql<{ sale_id: string | null, outcome: string, before: boolean, inside: boolean, n: number }>(app,
    `SELECT a.sale_id, a.outcome, a.attempted_at < $1 AS before,
            coalesce(a.attempted_at >= s.starts_at AND a.attempted_at < s.ends_at, false) AS inside, count(*)::int AS n
     FROM checkout_attempts a LEFT JOIN sales s ON s.id = a.sale_id GROUP BY 1, 2, 3, 4`, [new Date(H14)])
  for (const row of outcomes) {
    assert.equal(row.inside, true, `every attempt row carries the sale of its instant: ${JSON.stringify(row)}`)
    assert.notEqual(row.outcome, 'no_active_sale')
  }
  const accepted = (before: boolean) => outcomes.filter((r) => r.outcome === 'accepted' && r.before === before).reduce((n, r) => n + r.n, 0)
  assert.ok(accepted(true) > 0 && accepted(false) > 0, `load on both sides of the hour: ${accepted(true)} before, ${accepted(false)} after`)
  const [late] = await sql<{ n: number }>(app,
    'SELECT count(*)::int AS n FROM purchases p JOIN sales s ON s.id = p.sale_id WHERE p.purchased_at >= s.ends_at')
  assert.equal(late?.n, 0, 'no purchase counted into a sale after its end')

  // Every code of the 13:00 sale is refused after the hour.
  assert.ok(unredeemed13.length > 0)
  for (const code of unredeemed13) {
    const res = await post(`/purchase?code=${code}`)
    assert.equal(res.status, 410)
    assert.ok(['sale_over', 'code_expired'].includes(res.body.error as string), JSON.stringify(res))
  }
  t.diagnostic(`statuses ${JSON.stringify([...statuses])}, accepted ${accepted(true)} before / ${accepted(false)} after 14:00`)
})

test('a clock jumped past the hour with no tick and nothing prepared: the first request prepares and sells', async (t) => {
  const clock = new TestClock(H13 + 10_000)
  const app = await buildTestApp(t, isolatedConfig(t, { SALE_PREPARE_SECONDS: 1 }), clock)
  const before = (await app.inject('/')).json()
  assert.deepEqual(before.next_sale, { id: null, opens_at: '2031-03-04T14:00:00.000Z', opens_in_seconds: 3590, prepared: false })

  clock.set('2031-03-04T14:00:03.000Z') // frozen from 13:00:10 until now: every tick missed
  const started = performance.now()
  const res = await checkout(app, 'user_id=a&id=1')
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(res.json().sale_id, 2)
  assert.ok(performance.now() - started < 1000, 'within a second of resuming')
})

test('the roll ticks on its own: the next sale is prepared ahead and GET / says so', async (t) => {
  const clock = new TestClock(H14 - 120_000)
  const app = await buildTestApp(t, isolatedConfig(t, { SALE_PREPARE_SECONDS: 60 }), clock)
  assert.equal((await app.inject('/')).json().next_sale.prepared, false, 'not yet: 120 s before, the lead is 60 s')
  clock.set('2031-03-04T13:59:30.000Z')
  await waitFor('the next sale to be prepared ahead', async () => (await app.inject('/')).json().next_sale.prepared === true, 5000, async () => (await app.inject('/')).json().next_sale)
  const root = (await app.inject('/')).json()
  assert.deepEqual(root.next_sale, { id: 2, opens_at: '2031-03-04T14:00:00.000Z', opens_in_seconds: 30, prepared: true })
  assert.equal(root.sale.id, 1)
})

test('instances preparing the next sale together: one row each, seeded once, ids 1, 2, 3', async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: 30 })
  const clock = new TestClock(H14 - 60_000) // within the default lead: both prepare 13:00 and 14:00 at start-up
  const [a, b] = await Promise.all([buildTestApp(t, config, clock), buildTestApp(t, config, clock)])
  assert.ok(a !== undefined && b !== undefined)
  clock.set('2031-03-04T14:00:00.000Z')
  const { code } = (await checkout(a, 'user_id=x&id=7')).json()
  assert.equal((await purchase(a, code)).statusCode, 200)
  // Both prepare again (as every tick does): nothing is re-seeded, the purchase stands.
  await Promise.all([a.sales.prepareAhead(), b.sales.prepareAhead()])
  assert.equal((await checkout(b, 'user_id=y&id=7')).json().error, 'item_sold')

  clock.set('2031-03-04T14:59:00.000Z')
  await Promise.all([a.sales.prepareAhead(), b.sales.prepareAhead(), a.sales.prepareAhead()])
  const sales = await sql<{ id: string, starts_at: Date, items: number }>(a,
    'SELECT s.id, s.starts_at, (SELECT count(*)::int FROM items i WHERE i.sale_id = s.id) AS items FROM sales s ORDER BY s.id')
  assert.deepEqual(sales.map((s) => [Number(s.id), s.starts_at.toISOString(), s.items]), [
    [1, '2031-03-04T13:00:00.000Z', 30], [2, '2031-03-04T14:00:00.000Z', 30], [3, '2031-03-04T15:00:00.000Z', 30]
  ])
})

test('Postgres down at XX:59: preparation is retried and the sale opens on time; down past XX:00, a clear 503 and recovery', { skip: !canSwitchUser && 'needs root to run a dedicated Postgres' }, async (t) => {
  const postgres = dedicatedPostgres(t)
  const config = isolatedConfig(t, { DATABASE_URL: postgres.url, SALE_PREPARE_SECONDS: 60, PG_CONNECT_TIMEOUT_MS: 300 })
  const clock = new TestClock(H14 - 120_000)
  const app = await buildTestApp(t, config, clock)

  postgres.stop()
  clock.set('2031-03-04T13:59:10.000Z') // the ticks now try to prepare 14:00, and fail
  await sleep(1500)
  assert.equal((await app.inject('/')).json().next_sale.prepared, false)
  postgres.start()
  await waitFor('the next sale to be prepared ahead', async () => (await app.inject('/')).json().next_sale.prepared === true, 10_000, async () => (await app.inject('/')).json().next_sale)
  clock.set('2031-03-04T14:00:00.000Z')
  const opened = await checkout(app, 'user_id=a&id=1')
  assert.equal(opened.statusCode, 200, opened.body)
  assert.equal(opened.json().sale_id, 2)

  // Down across 15:00: the hour cannot be prepared; the answer says so, and it heals by itself.
  postgres.stop()
  clock.set('2031-03-04T15:00:00.500Z')
  const refused = await checkout(app, 'user_id=a&id=1')
  assert.equal(refused.statusCode, 503, refused.body)
  assert.equal(refused.headers['retry-after'], '1')
  assert.match(refused.json().message, /sale .*could not be prepared/i)
  postgres.start()
  await waitFor('a checkout to answer 200 after Postgres is back', async () => (await checkout(app, 'user_id=a&id=1')).statusCode === 200, 10_000)
  assert.equal((await app.inject('/')).json().sale.id, 3)
})

const libfaketime = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1'

test('a service frozen (SIGSTOP) across the hour sells the new sale within a second of resuming', { skip: !existsSync(libfaketime) && !process.env.CI && 'needs libfaketime (Debian package faketime; .ci/run installs it)' }, async (t) => {
  // The child's clock starts at 13:59:35 (libfaketime: 23 s for a start-up on a loaded host); a
  // lead of 1 s means nothing of 14:00 is prepared when it freezes at 13:59:58, and it thaws at
  // 14:00:03 with every timer missed.
  const config = isolatedConfig(t, { SALE_ITEMS: 50 })
  // (Its clock is years from Postgres's: the comparison of the clocks is off.)
  const service = await startService(t, config, {
    env: { SALE_PREPARE_SECONDS: '1', CLOCK_SOURCE: 'local', CLOCK_SKEW_MAX_MS: '0', LD_PRELOAD: libfaketime, FAKETIME: '@2031-03-04 13:59:35', FAKETIME_DONT_FAKE_MONOTONIC: '1' }
  })
  const serviceNow = async () => Date.parse(((await (await fetch(service.url)).json()) as { now: string }).now)
  const offset = await serviceNow() - Date.now()
  assert.ok(Date.now() + offset < H14 - 2000, 'the service started early enough to freeze before the hour')
  await sleep(H14 - 2000 - (Date.now() + offset))
  service.child.kill('SIGSTOP')
  await sleep(H14 + 3000 - (Date.now() + offset))
  service.child.kill('SIGCONT')
  const started = performance.now()
  const res = await fetch(`${service.url}/checkout?user_id=a&id=1`, { method: 'POST' })
  const body = await res.json() as { sale_id: number }
  assert.equal(res.status, 200, JSON.stringify(body))
  assert.ok(performance.now() - started < 1000, 'within a second of resuming')
  const [sale] = await query<{ starts_at: Date }>(config, 'SELECT starts_at FROM sales WHERE id = $1', [body.sale_id])
  assert.equal(sale?.starts_at.getTime(), H14)
})

test('the decision script itself keeps a prepared sale shut until its start and after its end', async (t) => {
  const clock = new TestClock(H14 - 60_000)
  const app = await buildTestApp(t, isolatedConfig(t), clock)
  const next = app.sales.preparedNextSale()
  assert.ok(next !== null, 'prepared a minute ahead')
  const inventory = new Inventory(app.redis)
  const reserve = (now: number, code: string) => inventory.reserveItem(next, 'u', 1, code, now, now + 60_000)
  assert.equal(await reserve(H14 - 1, 'early-code-0000000000'), 'not_open')
  assert.equal(await reserve(next.endsAt, 'late-code-00000000000'), 'no_active_sale')
  assert.equal(await reserve(H14, 'first-code-0000000000'), 'ok')
})
