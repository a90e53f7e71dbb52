import assert from 'node:assert/strict'
import { test } from 'node:test'
import { buildApp } from '../../src/app.js'
import { SaleClock } from '../../src/redis/clock.js'
import { buildTestApp, checkout, isolatedConfig, purchase, sql, TestClock } from '../support/helpers.js'

/**
 * The sale clock inside the app: a clock that goes back across XX:00 neither reopens the hour
 * that is over nor creates a sale for it, and the customer hears a 503 `clock_skew`.
 */

const H14 = Date.parse('2031-03-04T14:00:00.000Z')

/** One sample of /metrics, by name and labels (`name{a="b"}`), or undefined. */
async function metric (app: Awaited<ReturnType<typeof buildApp>>, sample: string): Promise<number | undefined> {
  const text = (await app.inject('/metrics')).body
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `))
  return line === undefined ? undefined : Number(line.slice(sample.length + 1))
}

const skewRefusal = (res: { statusCode: number, body: string, headers: Record<string, unknown> }, what: string) => {
  assert.equal(res.statusCode, 503, `${what}: ${res.body}`)
  assert.equal(JSON.parse(res.body).error, 'clock_skew', `${what}: ${res.body}`)
  assert.equal(res.headers['retry-after'], '1')
}

test('Postgres keeps the sales in the order of their hours, whatever the clock says: an hour that is over is neither reopened nor created', async (t) => {
  // An injected clock is used as it is (no comparisons): what stops it here is Postgres alone.
  const clock = new TestClock(H14 - 30 * 60_000)
  const app = await buildTestApp(t, isolatedConfig(t), clock)
  assert.equal((await checkout(app, 'user_id=a&id=1')).json().sale_id, 1)
  clock.set('2031-03-04T14:00:10.000Z')
  const bought = await checkout(app, 'user_id=b&id=2')
  assert.equal(bought.json().sale_id, 2, bought.body)
  const { code } = bought.json()

  // A clock 11 s behind: 13:59:59, the hour of sale 1, which sale 2 has superseded.
  clock.set('2031-03-04T13:59:59.000Z')
  skewRefusal(await checkout(app, 'user_id=c&id=3'), 'a checkout in the hour that is over')
  skewRefusal(await purchase(app, code), 'a live code of the real sale (not 410 sale_over)')
  skewRefusal(await app.inject('/'), 'GET /')
  // Hours back: no sale is created for 11:00, which would come after sale 2.
  clock.set('2031-03-04T11:30:00.000Z')
  skewRefusal(await checkout(app, 'user_id=c&id=3'), 'a checkout in an hour with no sale')

  const sales = await sql<{ id: string, starts_at: Date }>(app, 'SELECT id, starts_at FROM sales ORDER BY id')
  assert.deepEqual(sales.map((s) => [Number(s.id), s.starts_at.toISOString()]), [[1, '2031-03-04T13:00:00.000Z'], [2, '2031-03-04T14:00:00.000Z']])
  const refused = await sql<{ sale_id: string | null, outcome: string }>(app, "SELECT sale_id, outcome FROM checkout_attempts WHERE user_id = 'c'")
  assert.deepEqual(refused, [{ sale_id: null, outcome: 'service_unavailable' }, { sale_id: null, outcome: 'service_unavailable' }])

  // The clock right again: the code buys in its sale.
  clock.set('2031-03-04T14:00:20.000Z')
  const res = await purchase(app, code)
  assert.equal(res.statusCode, 200, res.body)
})

test('Redis\'s clock 3 s behind right after 14:00 (a failover): 503 clock_skew and the skew in /metrics, no sale reopened; healed, the codes buy', async (t) => {
  // Redis's clock and this host's as offsets from a true time that moves only when told to.
  let mono = 0
  const origin = H14 - 1000
  let redisOffset = 0
  const clock = new SaleClock({
    redis: {
      time: async () => {
        const ms = origin + mono + redisOffset
        return [String(Math.floor(ms / 1000)), String((ms % 1000) * 1000)]
      }
    },
    skewMaxMs: 1000,
    local: () => origin + mono,
    mono: () => mono
  })
  const app = await buildApp(isolatedConfig(t), { clock })
  t.after(() => app.close())
  await app.ready()
  assert.equal(app.sales.preparedNextSale()?.id, 2, '14:00 prepared at 13:59:59')

  mono += 1500 // 14:00:00.500
  const res = await checkout(app, 'user_id=a&id=1')
  assert.equal(res.json().sale_id, 2, res.body)
  const { code } = res.json()
  assert.equal(await metric(app, 'flash_sale_clock_skew_refusing'), 0)

  redisOffset = -3000 // the new primary says 13:59:57.500
  await clock.sync()
  skewRefusal(await checkout(app, 'user_id=b&id=2'), 'a checkout')
  skewRefusal(await purchase(app, code), 'a live code of the 14:00 sale (not 410 sale_over)')
  skewRefusal(await app.inject('/'), 'GET /')
  assert.equal(await metric(app, 'flash_sale_clock_skew_refusing'), 1)
  assert.equal(await metric(app, 'flash_sale_clock_skew_seconds{against="host"}'), -3)
  assert.equal(await metric(app, 'flash_sale_clock_skew_seconds{against="sale_clock"}'), -3)
  assert.equal(await metric(app, 'flash_sale_unavailable_responses_total{cause="clock_skew"}'), 3)
  const late = await sql<{ n: number }>(app, 'SELECT count(*)::int AS n FROM checkout_attempts WHERE attempted_at < $1 OR sale_id = 1', [new Date(H14)])
  assert.equal(late[0]?.n, 0, 'nothing recorded before 14:00 or in sale 1')

  redisOffset = 0 // failed back, or its clock fixed
  await clock.sync()
  const bought = await purchase(app, code)
  assert.equal(bought.statusCode, 200, bought.body)
  assert.equal(await metric(app, 'flash_sale_clock_skew_refusing'), 0)
})
