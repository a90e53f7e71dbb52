import assert from 'node:assert/strict'
import { test } from 'node:test'
import { ServiceUnavailable } from '../../src/sale/errors.js'
import { SaleClock, type SaleClockOptions } from '../../src/redis/clock.js'
import { saleWindow } from '../../src/sale/sale.js'

/**
 * The sale clock against clocks a test drives: a monotonic clock, the true time, and this host's,
 * Redis's and Postgres's clocks as offsets from it (answers take no time unless a test says so).
 */

const H14 = Date.parse('2031-03-04T14:00:00.000Z')
const MINUTE = 60_000

class Clocks {
  mono = 1_000
  /** The true time at mono 0. */
  readonly origin: number
  host = 0
  redis = 0
  postgres = 0
  /** How long Redis takes to answer TIME (mono ms). */
  redisDelay = 0

  constructor (trueTimeNow: number) {
    this.origin = trueTimeNow - this.mono
  }

  get true (): number { return this.origin + this.mono }
  advance (ms: number): void { this.mono += ms }

  clock (options: Partial<SaleClockOptions> = {}): SaleClock {
    return new SaleClock({
      redis: {
        time: async () => {
          const ms = this.true + this.redis
          this.mono += this.redisDelay
          return [String(Math.floor(ms / 1000)), String((ms % 1000) * 1000)]
        }
      },
      witnesses: { postgres: async () => this.true + this.postgres },
      skewMaxMs: 1000,
      local: () => this.true + this.host,
      mono: () => this.mono,
      ...options
    })
  }
}

const refused = (clock: SaleClock) => assert.throws(() => clock.assertSound(), (error: unknown) =>
  error instanceof ServiceUnavailable && error.reason === 'clock_skew' && error.errorCode === 'clock_skew')
const near = (actual: number | undefined, expected: number, what: string) =>
  assert.ok(actual !== undefined && Math.abs(actual - expected) <= 1, `${what}: ${actual} ms, expected ${expected}`)

test('decides by Redis\'s clock, carried by the monotonic clock between readings', async () => {
  const clocks = new Clocks(H14 - MINUTE)
  clocks.host = -700 // this host is 0.7 s behind Redis: within the bound
  const clock = clocks.clock()
  assert.equal(await clock.sync(), true)
  assert.equal(clock.now(), H14 - MINUTE)
  clocks.advance(250)
  assert.equal(clock.now(), H14 - MINUTE + 250)
  clock.assertSound()
  near(clock.skew.againstMs.host, 700, 'Redis minus this host')
  assert.equal(clock.skew.refusing, false)
})

test('a Redis clock stepped back less than the bound holds the sale clock still, never back across XX:00', async () => {
  const clocks = new Clocks(H14 + 300)
  const clock = clocks.clock()
  await clock.sync()
  const first = clock.now()
  assert.equal(saleWindow(first).startsAt, H14)
  clocks.redis = -800 // a failover to a replica 0.8 s behind: 13:59:59.500
  await clock.sync()
  const readings = [clock.now()]
  for (let i = 0; i < 10; i++) {
    clocks.advance(100)
    readings.push(clock.now())
  }
  assert.ok(readings.every((ms, i) => ms >= first && ms >= (readings[i - 1] ?? first)), `never backwards: ${readings.map((ms) => ms - H14)}`)
  assert.ok(readings.every((ms) => saleWindow(ms).startsAt === H14), 'never the 13:00 sale again')
  clock.assertSound()
  // Once the replica's clock passes what was issued, the clock runs on with it.
  assert.equal(clock.now(), clocks.true - 800)
})

test('a failover to a Redis 23 minutes behind: not followed, decisions refused and the skew shown, until the clocks agree', async () => {
  const clocks = new Clocks(H14 + 20 * MINUTE)
  const clock = clocks.clock()
  await clock.sync()
  clock.assertSound()
  clocks.redis = -23 * MINUTE
  await clock.sync()
  refused(clock)
  // The clock runs on from its last sound reading: 14:20, not 13:57.
  clocks.advance(5000)
  assert.equal(clock.now(), clocks.true)
  const { refusing, againstMs } = clock.skew
  assert.equal(refusing, true)
  near(againstMs.host, -23 * MINUTE, 'Redis minus this host')
  near(againstMs.postgres, -23 * MINUTE, 'Redis minus Postgres')
  near(againstMs.sale_clock, -23 * MINUTE, 'Redis minus the sale clock')
  // Still so a second later: the jump is not followed while the others disagree with it.
  clocks.advance(1000)
  await clock.sync()
  refused(clock)
  assert.equal(clock.now(), clocks.true)

  clocks.redis = 0 // failed back, or the replica's clock fixed
  await clock.sync()
  clock.assertSound()
  assert.deepEqual(clock.skew.refusing, false)
})

test('a Redis a few seconds behind right after XX:00 reopens nothing: refused, and the clock stays in 14:00', async () => {
  const clocks = new Clocks(H14 + 500)
  const clock = clocks.clock()
  await clock.sync()
  assert.ok(clock.now() >= H14)
  clocks.redis = -3000 // 13:59:57.500
  await clock.sync()
  refused(clock)
  for (let i = 0; i < 5; i++) {
    clocks.advance(400)
    assert.ok(clock.now() >= H14, 'the 13:00 sale never comes back')
  }
})

test('a jump forward is not followed either: no sale opens early', async () => {
  const clocks = new Clocks(H14 - 10 * MINUTE)
  const clock = clocks.clock()
  await clock.sync()
  clocks.redis = 15 * MINUTE
  await clock.sync()
  refused(clock)
  assert.ok(clock.now() < H14, 'still 13:50')
})

test('started while Redis\'s clock is off: refused from the first reading', async () => {
  const clocks = new Clocks(H14 + 20 * MINUTE)
  clocks.redis = -23 * MINUTE
  const clock = clocks.clock()
  await clock.sync()
  refused(clock)
  near(clock.skew.againstMs.host, -23 * MINUTE, 'Redis minus this host')
})

test('Postgres\'s clock is a witness: beyond the bound it refuses, within it not', async () => {
  const clocks = new Clocks(H14)
  clocks.postgres = 1500
  const clock = clocks.clock()
  await clock.sync()
  refused(clock)
  near(clock.skew.againstMs.postgres, -1500, 'Redis minus Postgres')
  clocks.postgres = 800
  await clock.sync()
  clock.assertSound()
})

test('Redis and this host stepped back together (one machine): not followed until Postgres agrees, and then never back', async () => {
  const clocks = new Clocks(H14 + 5000)
  const clock = clocks.clock()
  await clock.sync()
  const issued = clock.now()
  clocks.redis = clocks.host = -10_000
  await clock.sync()
  refused(clock) // Postgres disagrees with the new reading
  assert.ok(clock.now() >= issued)

  clocks.postgres = -10_000 // every clock says so: the step is followed, but the clock does not go back
  await clock.sync()
  refused(clock)
  assert.equal(clock.now(), issued)
  clocks.advance(9500)
  await clock.sync()
  assert.equal(clock.now(), issued, 'held still while the new time is behind what was issued')
  clocks.advance(1000)
  await clock.sync()
  clock.assertSound()
  assert.equal(clock.now(), clocks.true - 10_000)
})

test('an answer too slow to tell when Redis read its clock is not used', async () => {
  const clocks = new Clocks(H14)
  const clock = clocks.clock()
  await clock.sync()
  clocks.redis = -23 * MINUTE
  clocks.redisDelay = 60
  assert.equal(await clock.sync(), false)
  clock.assertSound()
})

test('CLOCK_SKEW_MAX_MS=0: nothing is refused, and the clock still never runs backwards', async () => {
  const clocks = new Clocks(H14 + 500)
  const clock = clocks.clock({ skewMaxMs: 0 })
  await clock.sync()
  const issued = clock.now()
  clocks.redis = -23 * MINUTE
  await clock.sync()
  clock.assertSound()
  assert.equal(clock.now(), issued)
})

test('CLOCK_SOURCE=local: this host\'s clock is the source, Postgres its witness', async () => {
  const clocks = new Clocks(H14 + 500)
  const clock = clocks.clock({ redis: undefined })
  await clock.sync()
  assert.equal(clock.now(), H14 + 500)
  assert.equal(clock.skew.againstMs.host, undefined)
  clocks.host = -3000 // the host's clock stepped back (a bad NTP server)
  await clock.sync()
  refused(clock)
  assert.ok(clock.now() >= H14 + 500)
})
