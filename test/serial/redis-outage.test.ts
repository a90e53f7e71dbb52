import assert from 'node:assert/strict'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import { kill, pingRedis, startRedis, waitFor } from '../support/fault-kit.js'
import { buildTestApp, checkout, isolatedConfig, purchase, TestClock } from '../support/helpers.js'

interface Answer { path: string, started: number, ms: number, status: number, retryAfter: string | undefined, error: string | undefined }

const OUTAGE_MS = 10_000
/** Well-formed, never issued: a purchase of it asks Redis (then Postgres) every time. */
const UNKNOWN_CODE = 'A'.repeat(22)

/** What each worker asks, in turn: mostly checkouts. */
const MIX = ['/checkout', '/checkout', '/checkout', '/purchase', '/health', '/']

/** Workers asking for checkouts, purchases, /health and / as fast as they are answered, each answer timed. */
function drive (app: FastifyInstance, answers: Answer[], stop: AbortSignal): Promise<void[]> {
  return Promise.all(Array.from({ length: 8 }, async (_, w) => {
    for (let i = 0; !stop.aborted; i++) {
      const path = MIX[i % MIX.length] as string
      const started = performance.now()
      const res = path === '/checkout'
        ? await checkout(app, `user_id=w${w}&id=${3 + Math.floor(Math.random() * 900)}`)
        : path === '/purchase'
          ? await purchase(app, UNKNOWN_CODE)
          : await app.inject(path)
      const body = res.json() as { error?: string }
      answers.push({
        path,
        started,
        ms: performance.now() - started,
        status: res.statusCode,
        retryAfter: res.headers['retry-after'] as string | undefined,
        error: body.error
      })
      await sleep(5)
    }
  }))
}

const p99 = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.ceil(values.length * 0.99) - 1] ?? 0

test('Redis killed for 10 s under load: every answer meanwhile is a 503 + Retry-After within 100 ms, then recovery in seconds', async (t) => {
  const port = 17000 + Math.floor(Math.random() * 2000)
  let redis = startRedis(port)
  t.after(() => kill(redis))
  await waitFor(`redis-server on port ${port} to answer PING`, () => pingRedis(port), 5000)

  const config = isolatedConfig(t, { REDIS_URL: `redis://127.0.0.1:${port}`, SALE_ITEMS: 1000, USER_LIMIT: 1000 })
  const app = await buildTestApp(t, config, new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))
  const held = (await checkout(app, 'user_id=alice&id=1')).json().code as string
  assert.equal((await purchase(app, (await checkout(app, 'user_id=alice&id=2')).json().code)).statusCode, 200)

  const answers: Answer[] = []
  const stop = new AbortController()
  const load = drive(app, answers, stop.signal)
  await sleep(500)
  assert.ok(answers.some((a) => a.path === '/checkout' && a.status === 200), 'the load is served before the outage')

  await kill(redis)
  const down = performance.now()
  await sleep(OUTAGE_MS)
  redis = startRedis(port) // empty: it kept nothing on disk
  const up = performance.now()
  await waitFor('a checkout started after Redis came back to answer 200', async () => answers.at(-1)?.status !== 503 && answers.some((a) => a.started > up && a.path === '/checkout' && a.status === 200), 10_000, () => answers.at(-1))
    .catch(() => {})
  const recovered = answers.find((a) => a.started > up && a.path === '/checkout' && a.status === 200)
  await sleep(300)
  stop.abort()
  await load

  // Answers to requests that arrived while Redis was down (the first 100 ms are its death throes).
  const during = answers.filter((a) => a.started > down + 100 && a.started < up)
  assert.ok(during.length > 200, `the outage saw load (${during.length} answers)`)
  for (const a of during) {
    assert.equal(a.status, 503, `${a.path} during the outage: ${a.status}`)
    assert.equal(a.retryAfter, '1', `${a.path} during the outage has Retry-After`)
    if (a.path !== '/health') assert.equal(a.error, 'service_unavailable')
  }
  for (const path of new Set(MIX)) {
    const times = during.filter((a) => a.path === path).map((a) => a.ms)
    assert.ok(times.length > 20, `${path} was asked during the outage`)
    assert.ok(p99(times) < 100, `${path} answered within 100 ms (p99 ${p99(times).toFixed(1)} ms, max ${Math.max(...times).toFixed(1)} ms)`)
  }

  assert.ok(recovered !== undefined, 'checkouts succeed again after Redis returns')
  const recoveryMs = recovered.started + recovered.ms - up
  t.diagnostic(`recovered ${recoveryMs.toFixed(0)} ms after redis-server was started; outage p99 ${p99(during.map((a) => a.ms)).toFixed(1)} ms over ${during.length} answers`)
  assert.ok(recoveryMs < 2500, `recovered ${recoveryMs.toFixed(0)} ms after Redis returned`)
  // The rebuilt sale kept what Postgres recorded before the outage.
  assert.equal((await checkout(app, 'user_id=zed&id=2')).json().error, 'item_sold')
  assert.equal((await purchase(app, held)).statusCode, 200)
})

test('Redis hanging (SIGSTOP) with its socket open: once a heartbeat times out, answers are fast 503s; SIGCONT recovers', async (t) => {
  const port = 17000 + Math.floor(Math.random() * 2000)
  const redis = startRedis(port)
  t.after(async () => { redis.kill('SIGCONT'); await kill(redis) })
  await waitFor(`redis-server on port ${port} to answer PING`, () => pingRedis(port), 5000)
  const commandTimeoutMs = 300
  const config = isolatedConfig(t, { REDIS_URL: `redis://127.0.0.1:${port}`, SALE_ITEMS: 1000, USER_LIMIT: 1000, REDIS_COMMAND_TIMEOUT_MS: commandTimeoutMs })
  const app = await buildTestApp(t, config, new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))

  const answers: Answer[] = []
  const stop = new AbortController()
  const load = drive(app, answers, stop.signal)
  await sleep(300)
  redis.kill('SIGSTOP')
  const stalled = performance.now()
  await sleep(3000)
  redis.kill('SIGCONT')
  const resumed = performance.now()
  await waitFor('a checkout started after the resume to answer 200', async () => answers.some((a) => a.started > resumed && a.path === '/checkout' && a.status === 200), 5000, () => answers.at(-1)).catch(() => {})
  stop.abort()
  await load

  // Requests already waiting on Redis time out (commandTimeoutMs); the heartbeat (every 250 ms, its PING
  // failed by the same timeout) has noticed by then; 500 ms more for a loaded machine's timers.
  const settled = stalled + 250 + commandTimeoutMs + 500
  const during = answers.filter((a) => a.started > settled && a.started < resumed)
  assert.ok(during.length > 100, `the stall saw load (${during.length} answers)`)
  for (const a of during) assert.equal(a.status, 503, `${a.path} during the stall`)
  const times = during.map((a) => a.ms)
  assert.ok(p99(times) < 100, `answered within 100 ms (p99 ${p99(times).toFixed(1)} ms)`)
  const recovered = answers.find((a) => a.started > resumed && a.path === '/checkout' && a.status === 200)
  assert.ok(recovered !== undefined, 'checkouts succeed again after SIGCONT')
  t.diagnostic(`stall p99 ${p99(times).toFixed(1)} ms over ${during.length} answers; recovered ${(recovered.started + recovered.ms - resumed).toFixed(0)} ms after SIGCONT`)
})
