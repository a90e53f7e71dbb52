import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { canSwitchUser, dedicatedPostgres, freePort, kill, pingRedis, startRedis, waitFor } from '../support/fault-kit.js'
import { buildTestApp, checkout, isolatedConfig, purchase, schemaClient, sql, TestClock } from '../support/helpers.js'

const ITEMS = 300

test('checkouts whose commit stalled past the timeout never hold an item, even after Redis is rebuilt from Postgres', { skip: !canSwitchUser && 'needs root to run a dedicated Postgres' }, async (t) => {
  const postgres = dedicatedPostgres(t)
  const redisPort = await freePort()
  let redis = startRedis(redisPort)
  t.after(() => kill(redis))
  await waitFor(`redis-server on port ${redisPort} to answer PING`, () => pingRedis(redisPort), 5000)
  const spoolDir = mkdtempSync(join(tmpdir(), 'flash-spool-'))
  t.after(() => rmSync(spoolDir, { recursive: true, force: true }))
  const config = isolatedConfig(t, {
    DATABASE_URL: postgres.url,
    REDIS_URL: `redis://127.0.0.1:${redisPort}`,
    SALE_ITEMS: ITEMS,
    USER_LIMIT: 1000,
    CHECKOUT_TTL_SECONDS: 600,
    PG_CONNECT_TIMEOUT_MS: 500,
    PG_QUERY_TIMEOUT_MS: 500,
    SPOOL_DIR: spoolDir
  })
  // The sale clock stands still: no code expires during the test, so every 200 must stay buyable.
  const app = await buildTestApp(t, config, new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))

  const acknowledged = new Map<string, number>() // code -> item
  let refusedUnavailable = 0
  const done = new AbortController()
  const load = Promise.all(Array.from({ length: 16 }, async (_, u) => {
    while (!done.signal.aborted) {
      const res = await checkout(app, `user_id=u${u}&id=${1 + Math.floor(Math.random() * ITEMS)}`)
      if (res.statusCode === 200) acknowledged.set(res.json().code, res.json().item.id)
      else if (res.statusCode === 503) refusedUnavailable++
      await sleep(5)
    }
  }))

  // Rows committed behind their 503s: the spool's replay rewrote them (an ON CONFLICT DO UPDATE;
  // no purchase has updated anything yet). Backends report their counts when idle, within about
  // 10 s; per partition (the parent counts nothing).
  const rewrittenAfter503 = async () => (await sql<{ n: string }>(app,
    "SELECT coalesce(sum(n_tup_upd), 0)::text AS n FROM pg_stat_user_tables WHERE relname LIKE 'checkout\\_attempts\\_p%' AND schemaname = current_schema()"))[0]?.n !== '0'

  // Freeze the database with batches on the wire: the client gives up on them (503, holds
  // cancelled in Redis), the statements run and commit once it thaws. Whether a batch is on the
  // wire at that instant is timing (a CPU-starved run can miss), so the stall is repeated, at
  // most three times, until one was caught.
  await sleep(400)
  for (let stalls = 0; stalls < 3; stalls++) {
    postgres.stall()
    await sleep(3000)
    postgres.resume()
    await waitFor('/health to answer 200 after the Postgres stall', async () => (await app.inject('/health')).statusCode === 200, 10_000)
    if (await waitFor('a row committed after its 503 to be rewritten by the spool', rewrittenAfter503, 12_000).then(() => true, () => false)) break
  }
  await sleep(500)
  done.abort()
  await load
  assert.ok(refusedUnavailable > 0, 'the stall was seen by the clients')
  // Whatever the service still has to settle with Postgres it does by itself, within seconds.
  await waitFor('the spool to be replayed into Postgres (flash_sale_spool_bytes 0)', async () => /^flash_sale_spool_bytes 0$/m.test((await app.inject('/metrics')).body), 10_000).catch(() => {})

  // Every item a 503'd checkout let go of is free for someone else: a sweeper takes all free items.
  for (let item = 1; item <= ITEMS; item++) {
    const res = await checkout(app, `user_id=sweeper&id=${item}`)
    if (res.statusCode === 200) acknowledged.set(res.json().code, item)
  }

  // The stall did what it is for: rows committed behind their 503s, and the spool rewrote them.
  await waitFor('a row committed after its 503 to be rewritten by the spool', rewrittenAfter503, 15_000)
    .catch(() => assert.fail('no checkout committed after its 503: the stall missed every batch'))

  // Postgres holds no accepted checkout that its client was not told about.
  const accepted = await sql<{ code: string }>(app, "SELECT code FROM checkout_attempts WHERE outcome = 'accepted' AND settled IS DISTINCT FROM 'voided'")
  const phantoms = accepted.filter((r) => !acknowledged.has(r.code))
  assert.equal(phantoms.length, 0, `${phantoms.length} accepted rows were answered 503`)

  // Redis restarts empty and is rebuilt from Postgres.
  await kill(redis)
  redis = startRedis(redisPort)
  await waitFor(`the restarted redis-server on port ${redisPort} to answer PING`, () => pingRedis(redisPort), 5000)
  await waitFor('the rebuilt sale to hold exactly the acknowledged codes', async () => (await app.inject('/')).json().sale?.held === acknowledged.size, 10_000, async () => (await app.inject('/')).json().sale?.held).catch(() => {})

  // Every 200 buys its item; afterwards nothing is held: no 503'd code holds an item.
  const lost: string[] = []
  for (const code of acknowledged.keys()) {
    const res = await purchase(app, code)
    if (res.statusCode !== 200) lost.push(res.json().error)
  }
  assert.deepEqual(lost, [], 'every customer with a 200 can buy')
  const { sold, held } = (await app.inject('/')).json().sale
  assert.deepEqual({ sold, held }, { sold: acknowledged.size, held: 0 })
})

test('a checkout whose row commits after a rebuild of Redis read Postgres is not a 200 that cannot buy', async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: 10, USER_LIMIT: 5 })
  const app = await buildTestApp(t, config, new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))
  const redis = new Redis(config.REDIS_URL)
  t.after(() => redis.disconnect())
  const metaKeys = async () => redis.keys(`${config.REDIS_KEY_PREFIX}{sale:*}:meta`)

  // Inserts into checkout_attempts wait on this lock (reads do not): alice's row is in flight.
  const locker = await schemaClient(t, config)
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE checkout_attempts IN EXCLUSIVE MODE')
  const alice = checkout(app, 'user_id=alice&id=1')
  await sleep(300)

  // Redis loses the sale; the next request rebuilds it from Postgres, which has no row of alice's yet.
  const keys = await redis.keys(`${config.REDIS_KEY_PREFIX}*`)
  await redis.del(...keys)
  const bob = checkout(app, 'user_id=bob&id=2')
  await waitFor('the rebuild to have created the sale\'s meta key', async () => (await metaKeys()).length === 1, 5000, () => metaKeys())
  await locker.query('COMMIT')

  for (const [who, res] of [['alice', await alice], ['bob', await bob]] as const) {
    if (res.statusCode !== 200) continue
    const bought = await purchase(app, res.json().code)
    assert.equal(bought.statusCode, 200, `${who} got a 200 and can buy: ${bought.body}`)
  }
  assert.equal((await bob).statusCode, 200, 'a checkout after the rebuild is unaffected')
  // alice's code holds nothing: her item is free for someone else.
  assert.equal((await checkout(app, 'user_id=carol&id=1')).statusCode, 200)
})
