import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildApp } from '../../src/app.js'
import { HOUR_MS, saleWindow } from '../../src/sale/sale.js'
import { freePort, kill, pingRedis, query, startRedis, startService } from '../support/fault-kit.js'
import { isolatedConfig, TestClock } from '../support/helpers.js'

/**
 * The sale clock follows Redis's, and a Sentinel failover can hand the service a Redis whose
 * clock is minutes off. Here the service's Redis is replaced (same address) by one whose clock is
 * behind, under libfaketime: the service must refuse (503 clock_skew, shown in /metrics) rather
 * than reopen the previous hour's sale or create one for an hour that is over.
 */

const libfaketime = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1'
/**
 * redis-server's jemalloc and libfaketime deadlock at start (libfaketime issue #130); with glibc
 * preloaded too, redis-server allocates with glibc's malloc and starts.
 */
const libc = '/lib/x86_64-linux-gnu/libc.so.6'

/** Waits for `check`, or fails naming what it waited for and what it last saw. */
async function waitUntil (what: string, ms: number, check: () => Promise<string | null>): Promise<string> {
  const deadline = Date.now() + ms
  let last = 'nothing yet'
  for (;;) {
    try {
      const seen = await check()
      if (seen !== null) return seen
    } catch (error) {
      last = String(error)
    }
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms (last: ${last})`)
    await sleep(100)
  }
}

test('a failover to a Redis whose clock is behind: no sale reopened, none created for an hour that is over, 503 clock_skew and the skew in /metrics until the clocks agree', {
  skip: !existsSync(libfaketime) && !process.env.CI && 'needs libfaketime (Debian package faketime; .ci/run installs it)'
}, async (t) => {
  // A minute before the hour ends, the hour may turn mid-test: start in the next one.
  const untilNextHour = saleWindow(Date.now()).endsAt - Date.now()
  if (untilNextHour < 60_000) await sleep(untilNextHour + 1000)
  const current = saleWindow(Date.now()).startsAt
  const previous = current - HOUR_MS

  const port = await freePort()
  let redis: ChildProcess | null = null
  t.after(async () => { if (redis !== null) await kill(redis) })
  /** Replaces the Redis on `port` by one whose clock is `behindMs` behind (0: right). */
  const replaceRedis = async (behindMs: number) => {
    if (redis !== null) await kill(redis)
    redis = startRedis(port, behindMs === 0
      ? {}
      : { LD_PRELOAD: `${libfaketime}:${libc}`, FAKETIME: `-${Math.round(behindMs / 1000)}`, FAKETIME_DONT_FAKE_MONOTONIC: '1' })
    await waitUntil(`the Redis ${behindMs} ms behind answers PING`, 10_000, async () => await pingRedis(port) ? 'up' : null)
  }
  await replaceRedis(0)
  const config = isolatedConfig(t, { REDIS_URL: `redis://127.0.0.1:${port}`, SALE_ITEMS: 20, USER_LIMIT: 3 })

  // The previous hour's sale, sold in during its hour (an instance whose clock said so), is sale 1.
  const earlier = await buildApp(config, { now: new TestClock(previous + 30 * 60_000).now })
  await earlier.ready()
  const old = await earlier.inject({ method: 'POST', url: '/checkout?user_id=alice&id=1' })
  await earlier.close()
  assert.equal(old.json().sale_id, 1, old.body)

  // The service, on Redis's clock: the current hour is sale 2.
  const service = await startService(t, config)
  const post = async (path: string) => {
    const res = await fetch(`${service.url}${path}`, { method: 'POST' })
    return { status: res.status, body: await res.json() as { error?: string, code?: string, sale_id?: number } }
  }
  const root = async () => {
    const res = await fetch(service.url)
    return { status: res.status, body: await res.json() as { error?: string, sale?: { id: number } } }
  }
  const bob = await post('/checkout?user_id=bob&id=2')
  assert.equal(bob.status, 200, JSON.stringify(bob.body))
  assert.equal(bob.body.sale_id, 2)
  const metrics = async () => (await fetch(`${service.url}/metrics`)).text()
  const sample = (text: string, name: string) => {
    const line = text.split('\n').find((l) => l.startsWith(`${name} `))
    return line === undefined ? undefined : Number(line.slice(name.length + 1))
  }
  const [{ last } = { last: 0 }] = await query<{ last: string }>(config, 'SELECT coalesce(max(id), 0) AS last FROM checkout_attempts')

  /** Replaces Redis by one whose clock is `behindMs` behind and checks that nothing is decided by it. */
  const failoverTo = async (behindMs: number, what: string) => {
    const failedOverAt = Date.now()
    await replaceRedis(behindMs)
    // Until the service has read the new Redis's clock it decides by its own, rightly, in sale 2
    // (or refuses, still, for the previous Redis's clock).
    const seen = await waitUntil(`the service reads the clock of the Redis after ${what}`, 15_000, async () => {
      const res = await root()
      if (res.status === 200 && res.body.sale?.id === 2) return null
      const host = sample(await metrics(), 'flash_sale_clock_skew_seconds{against="host"}')
      return host === undefined || Math.abs(host + behindMs / 1000) < 5 ? JSON.stringify(res) : null
    })
    assert.deepEqual(JSON.parse(seen).status, 503, `after ${what}, GET / answered ${seen}`)
    assert.equal(JSON.parse(seen).body.error, 'clock_skew', `after ${what}, GET / answered ${seen}`)
    const checkout = await post('/checkout?user_id=carol&id=3')
    assert.deepEqual([checkout.status, checkout.body.error], [503, 'clock_skew'], `a checkout after ${what}: ${JSON.stringify(checkout)}`)
    const bought = await post(`/purchase?code=${bob.body.code}`)
    assert.deepEqual([bought.status, bought.body.error], [503, 'clock_skew'], `bob's live code after ${what} (not 410 sale_over): ${JSON.stringify(bought)}`)

    const text = await metrics()
    assert.equal(sample(text, 'flash_sale_clock_skew_refusing'), 1, `after ${what}`)
    const host = sample(text, 'flash_sale_clock_skew_seconds{against="host"}') ?? 0
    assert.ok(Math.abs(host + behindMs / 1000) < 5, `after ${what}, Redis minus this host: ${host} s`)
    assert.ok((sample(text, 'flash_sale_unavailable_responses_total{cause="clock_skew"}') ?? 0) >= 3, `after ${what}, the refusals are counted`)
    // Nothing recorded since carries a time from before the failover.
    const early = await query<{ id: string, attempted_at: Date }>(config,
      'SELECT id, attempted_at FROM checkout_attempts WHERE id > $1 AND attempted_at < $2', [last, new Date(failedOverAt - 1000)])
    assert.deepEqual(early, [], `after ${what}, attempts recorded at an earlier time`)
  }
  const intoHour = Date.now() - current
  // 1. Into the last minute of the previous hour: sale 1 must not reopen.
  await failoverTo(intoHour + 60_000, 'a failover to a Redis in the previous hour')
  // 2. Two hours back: no sale may be created for that hour.
  await failoverTo(intoHour + HOUR_MS + 60_000, 'a failover to a Redis two hours behind')

  const sales = await query<{ id: string, starts_at: Date }>(config, 'SELECT id, starts_at FROM sales ORDER BY id')
  assert.deepEqual(sales.map((s) => [Number(s.id), s.starts_at.getTime()]).slice(0, 2), [[1, previous], [2, current]],
    `no other sale: ${JSON.stringify(sales)}`)
  assert.ok(sales.every((s, i) => i === 0 || s.starts_at > (sales[i - 1] as { starts_at: Date }).starts_at), 'ids in the order of their hours')
  const [{ n } = { n: -1 }] = await query<{ n: number }>(config, "SELECT count(*)::int AS n FROM checkout_attempts WHERE sale_id = 1 AND user_id <> 'alice'")
  assert.equal(n, 0, 'nothing more was decided in sale 1')

  // A Redis whose clock is right again: the service decides again, and bob's code buys in its sale.
  await replaceRedis(0)
  await waitUntil('GET / answers sale 2 again once the clocks agree', 15_000, async () => {
    const res = await root()
    return res.status === 200 && res.body.sale?.id === 2 ? 'ok' : null
  })
  const bought = await post(`/purchase?code=${bob.body.code}`)
  assert.equal(bought.status, 200, JSON.stringify(bought))
  assert.equal(sample(await metrics(), 'flash_sale_clock_skew_refusing'), 0)
})
