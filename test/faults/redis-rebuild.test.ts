import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import type { Config } from '../../src/config.js'
import { pingRedis, startRedis, waitFor } from '../support/fault-kit.js'
import { buildTestApp, checkout, isolatedConfig, purchase, sql, TestClock } from '../support/helpers.js'

/** Loses every Redis key of this test's app: the same as FLUSHALL or a restart, for it alone. */
async function loseRedisState (config: Config): Promise<number> {
  const redis = new Redis(config.REDIS_URL)
  try {
    const keys = await redis.keys(`${config.REDIS_KEY_PREFIX}*`)
    return keys.length > 0 ? await redis.del(...keys) : 0
  } finally {
    redis.disconnect()
  }
}

async function saleState (app: FastifyInstance) {
  const { sold, held, left } = (await app.inject('/')).json().sale
  return { sold, held, left }
}

test('after Redis loses the sale, it is rebuilt from Postgres before the next answer', async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: 10, USER_LIMIT: 3, CHECKOUT_TTL_SECONDS: 60 })
  const clock = new TestClock(Date.parse('2031-03-04T13:10:00.000Z'))
  const app = await buildTestApp(t, config, clock)

  const expiring = (await checkout(app, 'user_id=carol&id=5')).json().code // expires at 13:11:00
  clock.advance(30_000)
  const bought = (await checkout(app, 'user_id=alice&id=1')).json().code
  assert.equal((await purchase(app, bought)).statusCode, 200)
  const held = (await checkout(app, 'user_id=bob&id=2')).json().code
  assert.equal((await checkout(app, 'user_id=alice&id=3')).statusCode, 200)
  assert.equal((await checkout(app, 'user_id=alice&id=4')).statusCode, 200) // alice: 1 bought + 2 held = limit
  clock.advance(30_000) // 13:11:00: carol's hold has expired, nobody swept it yet
  const before = { sold: 1, held: 3, left: 6 }

  assert.ok(await loseRedisState(config) >= 5)

  const sold = await checkout(app, 'user_id=zed&id=1')
  assert.equal(sold.json().error, 'item_sold', 'sold items stay sold')
  assert.equal((await checkout(app, 'user_id=zed&id=2')).json().error, 'item_reserved', 'live holds stay held')
  assert.equal((await checkout(app, 'user_id=alice&id=6')).json().error, 'user_limit_reached', 'user counts are right')
  assert.deepEqual(await saleState(app), before)
  assert.equal((await checkout(app, 'user_id=zed&id=5')).statusCode, 200, 'the expired hold was released')

  assert.equal((await purchase(app, bought)).json().error, 'code_used', 'a used code stays used')
  assert.equal((await purchase(app, expiring)).json().error, 'code_expired')
  const bobBuys = await purchase(app, held)
  assert.equal(bobBuys.statusCode, 200, 'a live code still buys after the rebuild')

  const [dupes] = await sql<{ n: number }>(app, 'SELECT count(*)::int - count(DISTINCT item_id)::int AS n FROM purchases')
  assert.equal(dupes?.n, 0)
})

test('a stampede right after the loss, on two instances, never oversells', async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: 30, USER_LIMIT: 5, CHECKOUT_TTL_SECONDS: 600 })
  const clock = new TestClock(Date.parse('2031-03-04T13:10:00.000Z'))
  const [a, b] = await Promise.all([buildTestApp(t, config, clock), buildTestApp(t, config, clock)]) as [FastifyInstance, FastifyInstance]
  for (let id = 1; id <= 10; id++) {
    const { code } = (await checkout(a, `user_id=early${id % 4}&id=${id}`)).json()
    if (id % 2 === 0) assert.equal((await purchase(b, code)).statusCode, 200)
  }
  await loseRedisState(config)

  const responses = await Promise.all(Array.from({ length: 120 }, (_, i) =>
    checkout(i % 2 ? a : b, `user_id=late${i % 40}&id=${1 + (i % 30)}`)))
  for (const res of responses) assert.ok(res.statusCode < 500, res.body)
  const accepted = responses.filter((r) => r.statusCode === 200).map((r) => r.json().item.id as number)
  assert.equal(new Set(accepted).size, accepted.length, 'no item reserved twice')
  assert.ok(accepted.every((id) => id > 10), 'items held or sold before the loss stay unavailable')
  assert.equal(accepted.length, 20, 'every free item was sold exactly once')
  assert.deepEqual(await saleState(a), { sold: 5, held: 25, left: 0 })
  assert.deepEqual(await saleState(b), { sold: 5, held: 25, left: 0 })
})

test('Redis killed and restarted empty: fast 503s meanwhile, then recovery without a restart', async (t) => {
  const port = 17000 + Math.floor(Math.random() * 2000)
  let redis = startRedis(port)
  t.after(() => { redis.kill('SIGKILL') })
  await waitFor(`redis-server on port ${port} to answer PING`, () => pingRedis(port), 5000)

  const config = isolatedConfig(t, { REDIS_URL: `redis://127.0.0.1:${port}`, SALE_ITEMS: 10 })
  const app = await buildTestApp(t, config, new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))
  const { code } = (await checkout(app, 'user_id=alice&id=1')).json()
  assert.equal((await purchase(app, code)).statusCode, 200)
  const held = (await checkout(app, 'user_id=bob&id=2')).json().code

  redis.kill('SIGKILL')
  await new Promise((resolve) => redis.once('exit', resolve))
  const started = Date.now()
  const down = await checkout(app, 'user_id=carol&id=3')
  assert.equal(down.statusCode, 503)
  assert.equal(down.json().error, 'service_unavailable')
  assert.equal(down.headers['retry-after'], '1')
  assert.ok(Date.now() - started < 3000, `answered in ${Date.now() - started} ms`)
  assert.equal((await app.inject('/health')).statusCode, 503)

  redis = startRedis(port) // empty: it kept nothing on disk
  await waitFor('/health to answer 200 after Redis restarted empty', async () => (await app.inject('/health')).statusCode === 200, 10_000)
  await waitFor('item 1 to answer item_sold after the rebuild', async () => (await checkout(app, 'user_id=zed&id=1')).json().error === 'item_sold', 5000)
  assert.equal((await checkout(app, 'user_id=zed&id=2')).json().error, 'item_reserved')
  assert.equal((await purchase(app, held)).statusCode, 200)
  assert.equal((await checkout(app, 'user_id=carol&id=3')).statusCode, 200)

  const outcomes = await sql<{ outcome: string }>(app, "SELECT outcome FROM checkout_attempts WHERE user_id = 'carol' ORDER BY id")
  assert.deepEqual(outcomes.map((o) => o.outcome), ['service_unavailable', 'accepted'], 'the failed attempt was recorded too')
})

test('a recreated database never inherits the Redis state its old sale left under the same key prefix', async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: 10, USER_LIMIT: 3 })
  const clock = new TestClock(Date.parse('2031-03-04T13:10:00.000Z'))
  const before = await buildTestApp(t, config, clock)
  for (const id of [1, 2, 3]) assert.equal((await checkout(before, `user_id=dora&id=${id}`)).statusCode, 200)
  assert.equal((await checkout(before, 'user_id=dora&id=4')).json().error, 'user_limit_reached')
  await sql(before, `DROP SCHEMA ${config.DATABASE_SCHEMA} CASCADE`) // restored from an empty backup, say
  await before.close()

  // The same schema, prefix and hour: a new sale 1 whose Redis state must be its own.
  const after = await buildTestApp(t, config, clock)
  const res = await checkout(after, 'user_id=dora&id=1')
  assert.equal(res.statusCode, 200, `dora has no rows in the new database: ${res.body}`)
  assert.equal(res.json().sale_id, 1)
  assert.deepEqual(await saleState(after), { sold: 0, held: 1, left: 9 })
})
