import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { test, type TestContext } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import type { Redis } from 'ioredis'
import { Inventory } from '../../src/sale/inventory.js'
import { freePort, kill, pingRedis, startRedis, waitFor } from '../support/fault-kit.js'
import { buildTestApp, checkout, isolatedConfig, purchase, sql, TestClock } from '../support/helpers.js'

/**
 * Issue 16, item 1: a Redis decision the service gave up on (its command timed out, the client got
 * a 503) must change nothing a customer can see. ioredis does not withdraw a timed-out command: a
 * stalled Redis runs it when it resumes, and a slow reply can arrive after the client gave up on a
 * script that did run. Either way the retry must get what a first try would have.
 */

const COMMAND_TIMEOUT_MS = 300
/** How long Redis stays frozen: several command timeouts, so the heartbeat notices too. */
const STALL_MS = 1500

/** Polls `check` until it holds (5 s at most); a timeout names what was waited for. */
const until = (what: string, check: () => Promise<boolean>, ms = 5000): Promise<void> => waitFor(what, check, ms)

/** A private redis-server (SIGSTOP must not freeze other test files) and the app on it, with a short command timeout. */
async function setUp (t: TestContext): Promise<{ app: FastifyInstance, redis: ChildProcess }> {
  const port = await freePort()
  const redis = startRedis(port)
  t.after(async () => { redis.kill('SIGCONT'); await kill(redis) })
  await until('the private redis-server answers PING', () => pingRedis(port))
  const config = isolatedConfig(t, { REDIS_URL: `redis://127.0.0.1:${port}`, SALE_ITEMS: 20, USER_LIMIT: 3, REDIS_COMMAND_TIMEOUT_MS: COMMAND_TIMEOUT_MS })
  const app = await buildTestApp(t, config, new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))
  // The sale is prepared and the scripts are loaded before any fault.
  assert.equal((await checkout(app, 'user_id=warmup&id=1')).statusCode, 200)
  return { app, redis }
}

/** Freezes Redis for STALL_MS around `request` (sent right after SIGSTOP), then waits until the service answers again. */
async function duringStall<T> (app: FastifyInstance, redis: ChildProcess, request: () => Promise<T>): Promise<T> {
  redis.kill('SIGSTOP')
  const stalled = performance.now()
  const answer = await request()
  // Sent before the heartbeat noticed: the decision reached Redis and the client waited it out.
  assert.ok(performance.now() - stalled >= COMMAND_TIMEOUT_MS - 20, 'the request waited for Redis (it was not refused at the readiness gate)')
  await sleep(Math.max(0, STALL_MS - (performance.now() - stalled)))
  redis.kill('SIGCONT')
  await until('/health answers 200 after SIGCONT', async () => (await app.inject('/health')).statusCode === 200)
  return answer
}

/**
 * Runs `request` while this app's Redis connection reads nothing (its socket paused) from the
 * moment a command naming `marker` is written until past the command timeout: Redis runs that
 * command at once, but its reply reaches the client only after the client gave up on it.
 */
async function replyLostAfter<T> (app: FastifyInstance, marker: string, request: () => Promise<T>): Promise<T> {
  const stream = (app.redis as Redis).stream
  const write = stream.write
  let paused = false
  stream.write = function (this: typeof stream, chunk: unknown, ...rest: unknown[]) {
    const written = (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest)
    if (!paused && String(chunk).includes(marker)) {
      paused = true
      stream.pause()
      setTimeout(() => stream.resume(), COMMAND_TIMEOUT_MS + 200)
    }
    return written
  } as typeof stream.write
  try {
    return await request()
  } finally {
    stream.write = write
    assert.ok(paused, `a command naming ${marker} was written`)
    await until('/health answers 200 after the paused reads', async () => (await app.inject('/health')).statusCode === 200)
  }
}

/** Redis's sold count agrees with Postgres's purchases. */
async function assertSoldAgrees (app: FastifyInstance): Promise<void> {
  const [{ n } = { n: -1 }] = await sql<{ n: number }>(app, 'SELECT count(*)::int AS n FROM purchases')
  assert.equal((await app.inject('/')).json().sale.sold, n, 'Redis counts as sold what Postgres holds as bought')
}

/** A fresh code for `user` that Postgres recorded as accepted, and that buys. */
async function assertRetriedCheckoutBuys (app: FastifyInstance, user: string, item: number): Promise<void> {
  const retry = await checkout(app, `user_id=${user}&id=${item}`)
  assert.equal(retry.statusCode, 200, `${user}'s retried checkout: ${retry.body}`)
  const { code } = retry.json() as { code: string }
  const rows = await sql(app, "SELECT 1 FROM checkout_attempts WHERE code = $1 AND outcome = 'accepted'", [code])
  assert.equal(rows.length, 1, 'the code of the retry is recorded')
  const bought = await purchase(app, code)
  assert.equal(bought.statusCode, 200, `${user} buys with it: ${bought.body}`)
}

test('a checkout answered 503 while Redis is stalled leaves nothing behind: its retry gets a code that buys', async (t) => {
  const { app, redis } = await setUp(t)
  const stalled = await duringStall(app, redis, () => checkout(app, 'user_id=alice&id=5'))
  assert.equal(stalled.statusCode, 503, stalled.body)

  await assertRetriedCheckoutBuys(app, 'alice', 5)
  assert.equal((await checkout(app, 'user_id=bob&id=5')).json().error, 'item_sold', 'bob sees the item alice bought')
  await assertSoldAgrees(app)
})

test('a stalled checkout answered 503 takes nothing from another buyer: bob gets the item after SIGCONT', async (t) => {
  const { app, redis } = await setUp(t)
  const stalled = await duringStall(app, redis, () => checkout(app, 'user_id=alice&id=6'))
  assert.equal(stalled.statusCode, 503, stalled.body)

  await assertRetriedCheckoutBuys(app, 'bob', 6)
  assert.equal((await checkout(app, 'user_id=alice&id=6')).json().error, 'item_sold')
  await assertSoldAgrees(app)
})

test('a purchase answered 503 while Redis is stalled leaves the code as it was: its retry buys', async (t) => {
  const { app, redis } = await setUp(t)
  const { code } = (await checkout(app, 'user_id=carol&id=7')).json() as { code: string }
  const stalled = await duringStall(app, redis, () => purchase(app, code))
  assert.equal(stalled.statusCode, 503, stalled.body)

  const retry = await purchase(app, code)
  assert.equal(retry.statusCode, 200, `carol's retried purchase: ${retry.body}`)
  assert.equal((await checkout(app, 'user_id=bob&id=7')).json().error, 'item_sold')
  await assertSoldAgrees(app)
})

test('a checkout whose script ran but whose reply came after the timeout is undone: the retry gets a code that buys', async (t) => {
  const { app } = await setUp(t)
  const lost = await replyLostAfter(app, 'dave', () => checkout(app, 'user_id=dave&id=8'))
  assert.equal(lost.statusCode, 503, lost.body)

  await assertRetriedCheckoutBuys(app, 'dave', 8)
  await assertSoldAgrees(app)
})

test('a purchase whose script ran but whose reply came after the timeout is undone: the retry buys', async (t) => {
  const { app } = await setUp(t)
  const { code } = (await checkout(app, 'user_id=erin&id=9')).json() as { code: string }
  const lost = await replyLostAfter(app, code, () => purchase(app, code))
  assert.equal(lost.statusCode, 503, lost.body)

  const retry = await purchase(app, code)
  assert.equal(retry.statusCode, 200, `erin's retried purchase: ${retry.body}`)
  await assertSoldAgrees(app)
})

test('a code Postgres never recorded does not take its item out of the sale when redeemed', async (t) => {
  const { app } = await setUp(t)
  const { code } = (await checkout(app, 'user_id=frank&id=10')).json() as { code: string }
  // As if its accepted row had never committed (the hold of a decision the service gave up on).
  await sql(app, 'DELETE FROM checkout_attempts WHERE code = $1', [code])

  const bought = await purchase(app, code)
  assert.equal(bought.statusCode, 410, `an unrecorded code cannot buy: ${bought.body}`)
  assert.equal(bought.json().error, 'code_expired')
  await assertSoldAgrees(app)
  await assertRetriedCheckoutBuys(app, 'grace', 10)
})

test('a decision Redis reads past its deadline does nothing, not even the abuse count (no undo needed)', async (t) => {
  const { app, redis } = await setUp(t)
  const now = app.sales.now()
  const sale = await app.sales.currentSale(now)
  const { code: held } = (await checkout(app, 'user_id=henry&id=12')).json() as { code: string }
  // Decisions sent straight to Redis, without the service's undo; from a host whose clock is a
  // minute behind Redis's (the deadline is reckoned in Redis's clock: syncClock measures it).
  const inventory = new Inventory(app.redis, { commandTimeoutMs: COMMAND_TIMEOUT_MS, localClock: () => Date.now() - 60_000 })
  await inventory.syncClock()
  const fresh = 'H'.repeat(22)
  const [reserved, redeemed] = await duringStall(app, redis, () => Promise.allSettled([
    inventory.reserveItem(sale, 'latecomer', 11, fresh, now, now + 60_000, { max: 5, windowMs: 1000 }),
    inventory.redeemCode(sale, held, now, 'test-token')
  ]))
  assert.match(String(reserved.status === 'rejected' && reserved.reason), /Command timed out/)
  assert.match(String(redeemed.status === 'rejected' && redeemed.reason), /Command timed out/)

  const client = app.redis as Redis
  assert.equal(await client.hget(sale.key.codes, fresh), null, 'the late checkout decision reserved nothing')
  assert.equal(await client.hget(sale.key.items, '11'), null, 'its item is free')
  assert.match(await client.hget(sale.key.codes, held) ?? '', /^R\|/, 'the late purchase decision left the code reserved')
  const rateWindows = await client.keys(`${app.config.REDIS_KEY_PREFIX}${sale.tag}:rate:*`)
  for (const key of rateWindows) assert.equal(await client.hget(key.slice(app.config.REDIS_KEY_PREFIX.length), 'latecomer'), null, 'no abuse count for the late try')
})

test('a host clock far behind Redis\'s is corrected from Redis\'s first "too late" answer, not answered 503', async (t) => {
  const { app } = await setUp(t)
  const now = app.sales.now()
  const sale = await app.sales.currentSale(now)
  // Never synced: every deadline it writes is a minute in Redis's past.
  const inventory = new Inventory(app.redis, { commandTimeoutMs: COMMAND_TIMEOUT_MS, localClock: () => Date.now() - 60_000 })
  assert.equal(await inventory.reserveItem(sale, 'ivan', 13, 'I'.repeat(22), now, now + 60_000), 'ok')
  assert.equal(await inventory.reserveItem(sale, 'ivan', 14, 'J'.repeat(22), now, now + 60_000), 'ok')
})
