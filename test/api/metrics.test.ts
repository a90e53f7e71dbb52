import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import pg from 'pg'
import { unavailableCause } from '../../src/http/metrics.js'
import { BatchWriter } from '../../src/db/batch-writer.js'
import { ServiceUnavailable } from '../../src/sale/errors.js'
import { buildTestApp, checkout, isolatedConfig, purchase, sql, TestClock } from '../support/helpers.js'

interface Sample { name: string, labels: Record<string, string>, value: number }

/** Parses the Prometheus text format (one sample per line; # lines are HELP/TYPE). */
function parseMetrics (text: string): Sample[] {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    assert.ok(match, `not a sample line: ${line}`)
    const labels: Record<string, string> = {}
    for (const [, key, value] of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[key as string] = value as string
    samples.push({ name: match[1] as string, labels, value: Number(match[3]) })
  }
  return samples
}

/** The value of the one series with exactly these labels, or undefined. */
function value (samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const keys = Object.keys(labels)
  const found = samples.filter((s) => s.name === name &&
    Object.keys(s.labels).length === keys.length && keys.every((k) => s.labels[k] === labels[k]))
  assert.ok(found.length <= 1, `${name} ${JSON.stringify(labels)} is ambiguous`)
  return found[0]?.value
}

async function scrape (app: FastifyInstance): Promise<Sample[]> {
  const res = await app.inject('/metrics')
  assert.equal(res.statusCode, 200)
  assert.match(res.headers['content-type'] as string, /^text\/plain; version=0\.0\.4/)
  return parseMetrics(res.body)
}

const NOW = Date.parse('2031-03-04T13:10:00.000Z')

test('GET /metrics reports committed checkouts by outcome, the sale\'s counts, route durations and batch flushes', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t, { SALE_ITEMS: 20, USER_LIMIT: 3 }), new TestClock(NOW))

  const codes: string[] = []
  for (const id of [1, 2, 3]) {
    const res = await checkout(app, `user_id=alice&id=${id}`)
    assert.equal(res.statusCode, 200)
    codes.push(res.json().code)
  }
  assert.equal((await purchase(app, codes[0] as string)).statusCode, 200)
  assert.equal((await checkout(app, 'user_id=bob&id=2')).json().error, 'item_reserved')
  assert.equal((await checkout(app, 'user_id=bob&id=1')).json().error, 'item_sold')
  assert.equal((await checkout(app, 'user_id=alice&id=4')).json().error, 'user_limit_reached')
  assert.equal((await checkout(app, 'user_id=bob&id=99')).json().error, 'unknown_item')
  assert.equal((await checkout(app, 'id=5')).json().error, 'invalid_request')
  assert.equal((await purchase(app, 'x'.repeat(22))).json().error, 'unknown_code')
  for (const url of ['/no/such/page', '/another?x=1']) assert.equal((await app.inject(url)).statusCode, 404)

  const m = await scrape(app)

  // Checkout attempts: what was done, and exactly what Postgres holds.
  const attempts = (outcome: string) => value(m, 'flash_sale_checkout_attempts_total', { outcome })
  assert.deepEqual(
    ['accepted', 'item_reserved', 'item_sold', 'user_limit_reached', 'unknown_item', 'invalid_request', 'service_unavailable', 'sold_out', 'no_active_sale'].map(attempts),
    [3, 1, 1, 1, 1, 1, 0, 0, 0])
  const rows = await sql<{ outcome: string, n: string }>(app, 'SELECT outcome, count(*) AS n FROM checkout_attempts GROUP BY outcome')
  for (const { outcome, n } of rows) assert.equal(attempts(outcome), Number(n), outcome)

  // The current sale, computed at scrape time.
  assert.deepEqual(['sold', 'held', 'left'].map((state) => value(m, 'flash_sale_sale_items', { state })), [1, 2, 17])

  // Request durations by route pattern, method and status; unmatched URLs share one label value.
  const count = (route: string, method: string, status: number) =>
    value(m, 'flash_sale_http_request_duration_seconds_count', { route, method, status_code: String(status) })
  assert.equal(count('/checkout', 'POST', 200), 3)
  assert.equal(count('/checkout', 'POST', 409), 2)
  assert.equal(count('/checkout', 'POST', 403), 1)
  assert.equal(count('/checkout', 'POST', 404), 1)
  assert.equal(count('/checkout', 'POST', 400), 1)
  assert.equal(count('/purchase', 'POST', 200), 1)
  assert.equal(count('/purchase', 'POST', 404), 1)
  assert.equal(count('unmatched', 'GET', 404), 2)
  const routes = new Set(m.filter((s) => s.name.startsWith('flash_sale_http_request_duration_seconds')).map((s) => s.labels.route))
  assert.deepEqual([...routes].sort(), ['/checkout', '/purchase', 'unmatched'])
  const checkoutOk = { route: '/checkout', method: 'POST', status_code: '200' }
  const buckets = m.filter((s) => s.name === 'flash_sale_http_request_duration_seconds_bucket' &&
    s.labels.route === '/checkout' && s.labels.status_code === '200')
  assert.equal(buckets.at(-1)?.labels.le, '+Inf')
  assert.equal(buckets.at(-1)?.value, 3)
  for (let i = 1; i < buckets.length; i++) assert.ok((buckets[i]?.value as number) >= (buckets[i - 1]?.value as number), 'buckets are cumulative')
  assert.ok((value(m, 'flash_sale_http_request_duration_seconds_sum', checkoutOk) as number) > 0)

  // Group commit: every committed row counted, flushes timed, nothing failed or waiting.
  assert.equal(value(m, 'flash_sale_batch_rows_total', { writer: 'checkout_attempts' }), 8)
  assert.equal(value(m, 'flash_sale_batch_rows_total', { writer: 'purchases' }), 1)
  for (const writer of ['checkout_attempts', 'purchases']) {
    const flushes = value(m, 'flash_sale_batch_flush_duration_seconds_count', { writer }) as number
    assert.ok(flushes >= 1 && flushes <= (writer === 'purchases' ? 1 : 8), `${writer} flushes: ${flushes}`)
    assert.ok((value(m, 'flash_sale_batch_flush_duration_seconds_sum', { writer }) as number) > 0)
    assert.equal(value(m, 'flash_sale_batch_failures_total', { writer }), 0)
    assert.equal(value(m, 'flash_sale_batch_queue_depth', { writer }), 0)
  }
  assert.equal(value(m, 'flash_sale_unavailable_responses_total', { cause: 'redis' }), 0)
  assert.equal(value(m, 'flash_sale_dependency_errors_total', { dependency: 'postgres' }), 0)

  // Purchases: exactly the rows of purchases.
  assert.equal(value(m, 'flash_sale_purchases_total'), 1)
  assert.equal(Number((await sql<{ n: string }>(app, 'SELECT count(*) AS n FROM purchases'))[0]?.n), 1)

  // The next hour's sale (14:00) opens in 50 minutes and is not prepared yet (that starts 5 minutes before).
  assert.equal(value(m, 'flash_sale_next_sale_opens_in_seconds'), 3000)
  assert.equal(value(m, 'flash_sale_next_sale_prepared'), 0)

  // Default process metrics under their standard, unprefixed names (what Node.js dashboards query).
  assert.ok((value(m, 'process_cpu_user_seconds_total') as number) > 0)
  assert.ok(m.some((s) => s.name === 'nodejs_eventloop_lag_seconds'))
  assert.ok(m.some((s) => s.name === 'nodejs_heap_size_used_bytes'))
  assert.ok(!m.some((s) => s.name.startsWith('flash_sale_process_') || s.name.startsWith('flash_sale_nodejs_')))

  // Each app has its own registry: a second app in the same process starts from zero.
  const other = await buildTestApp(t, isolatedConfig(t), new TestClock(NOW))
  const fresh = await scrape(other)
  assert.equal(value(fresh, 'flash_sale_checkout_attempts_total', { outcome: 'accepted' }), 0)
  assert.equal(value(fresh, 'flash_sale_http_request_duration_seconds_count', checkoutOk), undefined)
  // ...and the first app's counters did not move.
  assert.equal(value(await scrape(app), 'flash_sale_checkout_attempts_total', { outcome: 'accepted' }), 3)
})

test('flash_sale_next_sale_prepared turns 1 once this instance prepared the next hour, and 0 again when that hour opens', async (t) => {
  const clock = new TestClock(NOW)
  const app = await buildTestApp(t, isolatedConfig(t, { SALE_PREPARE_SECONDS: 300 }), clock)
  const next = async () => {
    const m = await scrape(app)
    return [value(m, 'flash_sale_next_sale_prepared'), value(m, 'flash_sale_next_sale_opens_in_seconds')]
  }
  assert.deepEqual(await next(), [0, 3000])
  clock.set('2031-03-04T13:56:00.000Z')
  await app.sales.prepareAhead() // what the roll's tick does every second
  assert.deepEqual(await next(), [1, 240])
  clock.set('2031-03-04T14:00:30.000Z')
  assert.deepEqual(await next(), [0, 3570])
})

test('503s are counted by cause, lost pg connections are counted, and /metrics still answers with Redis down', async (t) => {
  const config = isolatedConfig(t)
  const app = await buildTestApp(t, config, new TestClock(NOW))
  assert.equal((await checkout(app, 'user_id=a&id=1')).statusCode, 200)

  // An idle pooled Postgres connection killed from outside: the pool's 'error' event.
  const pooled = await app.pg.connect()
  const { rows: [backend] } = await pooled.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')
  pooled.release()
  const admin = new pg.Client({ connectionString: config.DATABASE_URL })
  await admin.connect()
  try {
    await admin.query('SELECT pg_terminate_backend($1)', [backend?.pid])
  } finally {
    await admin.end()
  }
  const deadline = Date.now() + 5000
  while (value(await scrape(app), 'flash_sale_dependency_errors_total', { dependency: 'postgres' }) !== 1) {
    assert.ok(Date.now() < deadline, 'the pool error was not counted')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }

  app.redis.disconnect() // ioredis is told not to come back
  const refused = await checkout(app, 'user_id=a&id=2')
  assert.equal(refused.statusCode, 503)

  const m = await scrape(app)
  assert.equal(value(m, 'flash_sale_unavailable_responses_total', { cause: 'redis' }), 1)
  assert.equal(value(m, 'flash_sale_unavailable_responses_total', { cause: 'postgres' }), 0)
  // The refused attempt is still a committed row (Postgres is up).
  assert.equal(value(m, 'flash_sale_checkout_attempts_total', { outcome: 'service_unavailable' }), 1)
  assert.equal(value(m, 'flash_sale_checkout_attempts_total', { outcome: 'accepted' }), 1)
  // The sale's counts are unknown, so absent, not zero and not stale.
  assert.equal(m.some((s) => s.name === 'flash_sale_sale_items'), false)
  assert.equal(value(m, 'flash_sale_http_request_duration_seconds_count', { route: '/checkout', method: 'POST', status_code: '503' }), 1)
})

test('503 causes are told apart from the errors the service really raises', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(NOW))
  const ports = { redis: 6379, postgres: 5432 }
  const rejection = (promise: Promise<unknown>) => promise.then(() => assert.fail('expected a rejection'), (err: unknown) => err as ServiceUnavailable)

  const full = new BatchWriter<number>({ write: async (rows) => rows.map(() => undefined), maxRows: 10, windowMs: 1, maxQueue: 0, maxInflight: 1 })
  assert.equal(unavailableCause(await rejection(full.push(1)), ports), 'write_queue_full')

  const closed = new BatchWriter<number>({ write: async (rows) => rows.map(() => undefined), maxRows: 10, windowMs: 1, maxQueue: 10, maxInflight: 1 })
  await closed.close()
  assert.equal(unavailableCause(await rejection(closed.push(1)), ports), 'shutting_down')

  // A batch Postgres refused: the writer's 503 carries the pg error.
  const failing = new BatchWriter<number>({ write: async () => { await app.pg.query('SELECT no_such_column'); return [] }, maxRows: 10, windowMs: 1, maxQueue: 10, maxInflight: 1 })
  assert.equal(unavailableCause(await rejection(failing.push(1)), ports), 'postgres')

  // Connection refused on the Postgres port (a port nothing listens on, as configured).
  const probe = (await import('node:net')).createServer()
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const deadPort = (probe.address() as { port: number }).port
  await new Promise((resolve) => probe.close(resolve))
  const refused = await new pg.Client({ host: '127.0.0.1', port: deadPort, user: 'postgres' }).connect().catch((err: unknown) => err)
  const wrapped = new ServiceUnavailable('dependency_failed', { cause: refused })
  assert.equal(unavailableCause(wrapped, { redis: 6379, postgres: deadPort }), 'postgres')
  assert.equal(unavailableCause(wrapped, { redis: deadPort, postgres: 5432 }), 'redis')
  assert.equal(unavailableCause(new ServiceUnavailable('sale_restoring'), ports), 'sale_restoring')
})
