import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import pg from 'pg'
import { SaleClock } from '../../src/redis/clock.js'
import { startService, waitFor, type Service } from '../support/fault-kit.js'
import { buildTestApp, checkout, isolatedConfig, purchase, TestClock } from '../support/helpers.js'

/**
 * Edges of the top of the hour found in review: what one instance's trouble does to the others,
 * instances whose clocks disagree, and answers read across the boundary.
 */

const run = promisify(execFile)
const H14 = Date.parse('2031-03-04T14:00:00.000Z')

const libfaketime = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1'

test('an instance frozen in the middle of a preparation does not keep the other instances from opening the hour', { skip: !existsSync(libfaketime) && !process.env.CI && 'needs libfaketime (Debian package faketime; .ci/run installs it)' }, async (t) => {
  const config = isolatedConfig(t, { SALE_PREPARE_SECONDS: 55, PG_QUERY_TIMEOUT_MS: 1000 })
  const clock = new TestClock(H14 - 120_000) // 13:58: the healthy instance prepares 13:00 only
  const healthy = await buildTestApp(t, config, clock)

  // A second instance, a real process whose clock starts at 13:58:55: it prepares 14:00 at 13:59:05.
  // Its preparation is made to wait for the lock until the process is frozen (SIGSTOP: a long GC
  // or VM pause, a host that stops answering) inside it; then the lock is its.
  const holder = new pg.Client({ connectionString: config.DATABASE_URL, options: `-c search_path=${config.DATABASE_SCHEMA}` })
  await holder.connect()
  let frozen: Service | null = null
  try {
    await holder.query('BEGIN')
    await holder.query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.sales'))")
    const service = await startService(t, config, {
      // (Its clock is years from Postgres's: the comparison of the clocks is off.)
      env: { SALE_PREPARE_SECONDS: '55', CLOCK_SOURCE: 'local', CLOCK_SKEW_MAX_MS: '0', LD_PRELOAD: libfaketime, FAKETIME: '@2031-03-04 13:58:55', FAKETIME_DONT_FAKE_MONOTONIC: '1' }
    })
    await waitFor('the frozen instance to wait on the sales advisory lock', async () => (await holder.query(
      `SELECT 1 FROM pg_locks w JOIN pg_locks h ON h.locktype = w.locktype AND h.classid = w.classid AND h.objid = w.objid AND h.objsubid = w.objsubid
       WHERE w.locktype = 'advisory' AND NOT w.granted AND h.granted AND h.pid = pg_backend_pid()`)).rowCount === 1, 15_000)
    service.child.kill('SIGSTOP')
    frozen = service
  } finally {
    await holder.query('COMMIT').catch(() => {})
    await holder.end()
  }
  assert.ok(frozen !== null)
  const { child, url } = frozen

  clock.set('2031-03-04T13:59:10.000Z') // the healthy instance's ticks now prepare 14:00
  await sleep(2000)
  clock.set('2031-03-04T14:00:00.000Z')
  const answers: string[] = []
  await waitFor('the healthy instance to answer 200 at 14:00', async () => {
    const res = await checkout(healthy, 'user_id=a&id=1')
    answers.push(`${res.statusCode} ${res.json().error ?? ''}`)
    return res.statusCode === 200
  }, 8000).catch(() => {
    assert.fail(`the healthy instance never opened 14:00 while the other one was frozen: ${[...new Set(answers)].join(', ')} (${answers.length} tries)`)
  })

  // And the frozen one, thawed, carries on (its clock is past 14:00 too by now): it sells, it did not crash.
  child.kill('SIGCONT')
  await waitFor('the thawed instance to answer a checkout 200', async () => (await fetch(`${url}/checkout?user_id=b&id=2`, { method: 'POST' })).status === 200, 5000)
  assert.equal(child.exitCode, null, 'the thawed instance is still running')
})

test('instances whose own clocks are seconds apart open and close the sales at one instant: Redis\'s', { skip: !existsSync(libfaketime) && !process.env.CI && 'needs libfaketime (Debian package faketime; .ci/run installs it)' }, async (t) => {
  const config = isolatedConfig(t)
  const redis = new Redis(config.REDIS_URL)
  t.after(() => redis.disconnect())
  const redisNow = async () => {
    const [seconds, micros] = await redis.time()
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)
  }
  // Two clocks 3 s apart (NTP broken, a VM resumed late) measure the same offset target.
  // (Comparisons off: what is checked here is that both read Redis's time, not whether they may decide by it.)
  const ahead = new SaleClock({ redis, local: () => Date.now() + 1500, skewMaxMs: 0 })
  const behind = new SaleClock({ redis, local: () => Date.now() - 1500, skewMaxMs: 0 })
  await redis.ping() // connected: the round trips below measure Redis, not the connect
  assert.deepEqual(await Promise.all([ahead.sync(), behind.sync()]), [true, true])
  assert.ok(Math.abs(ahead.now() - behind.now()) <= 25, `${ahead.now() - behind.now()} ms apart`)

  // And the service decides by it: a real process whose own clock is 2 s behind reads Redis's time
  // (a disagreement it is told to tolerate: by default, over a second refuses decisions).
  const service = await startService(t, config, { env: { LD_PRELOAD: libfaketime, FAKETIME: '-2', FAKETIME_DONT_FAKE_MONOTONIC: '1', CLOCK_SKEW_MAX_MS: '5000' } })
  const before = await redisNow()
  const reported = Date.parse(((await (await fetch(service.url)).json()) as { now: string }).now)
  const after = await redisNow()
  assert.ok(reported >= before - 25 && reported <= after + 25, `the service's now is ${reported - before} ms from Redis's`)
})

test('GET / read across 14:00:00.000 never names the current sale as the next one', async (t) => {
  // The route reads the clock, then the service reads it again for the summary: let the hour
  // turn between the two reads, as it does for one request in a few thousand at XX:00.
  let reads = 0
  let instant = H14 - 60_000
  const clock = new TestClock(0, () => reads++ === 0 ? instant : instant + 1)
  const app = await buildTestApp(t, isolatedConfig(t, { SALE_PREPARE_SECONDS: 300 }), clock)
  instant = H14 - 1
  reads = 0
  const root = (await app.inject('/')).json()
  assert.notEqual(root.next_sale.id, root.sale.id, `sale ${root.sale.id} and next_sale ${JSON.stringify(root.next_sale)}`)
})

test('npm run sale:status shows what became of the previous sale, not only the current one', async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: 20, USER_LIMIT: 3, CHECKOUT_TTL_SECONDS: 600 })
  const clock = new TestClock(Date.now() - 3_600_000) // the previous hour, by the wall clock the command reads
  const app = await buildTestApp(t, config, clock)
  const { code } = (await checkout(app, 'user_id=alice&id=1')).json()
  assert.equal((await purchase(app, code)).statusCode, 200)
  assert.equal((await checkout(app, 'user_id=bob&id=2')).statusCode, 200) // a hold that dies with its sale
  clock.set(new Date().toISOString())
  assert.equal((await checkout(app, 'user_id=carol&id=3')).json().sale_id, 2)

  const { stdout } = await run(process.execPath, ['--import', 'tsx', 'src/cli/flash-sale.ts', 'status'], {
    env: { ...process.env, DATABASE_URL: config.DATABASE_URL, DATABASE_SCHEMA: config.DATABASE_SCHEMA }
  })
  assert.match(stdout, /sale 2: .*\(open, \d+ min left\)/)
  assert.match(stdout, /sale 1: .*\(closed\)\nitems 20 {3}sold 1 {3}unsold 19 {3}codes never redeemed 1 \(ended with the sale\)/,
    `the previous sale is listed too, with what ended with it:\n${stdout}`)
})
