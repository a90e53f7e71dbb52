import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import type { FastifyInstance } from 'fastify'
import pg from 'pg'
import type { Config } from '../../src/config.js'
import { writePurchases } from '../../src/sale/record-writers.js'
import { SaleRepository } from '../../src/sale/repository.js'
import type { CatalogItem } from '../../src/sale/sale.js'
import { waitFor } from '../support/fault-kit.js'
import { buildTestApp, checkout, isolatedConfig, purchase, schemaClient, sql, TestClock } from '../support/helpers.js'

/**
 * Two instances of one sale: A redeems a code and its purchase commit is held up inside Postgres
 * (a lock another transaction holds), while B reconciles and takes A's item for a crashed
 * instance's orphan. Postgres's settlement fence must decide one way for both: either A's
 * purchase stands and B gives nothing back, or B fences it off first: the code goes back to
 * reserved (A answers 503 and the retry buys), or, once the code's expiry has passed, it is voided
 * and A answers that the code expired. Never a 200 for a purchase whose item went back on sale.
 */
async function twoInstances (t: TestContext) {
  const config = isolatedConfig(t, { SALE_ITEMS: 5, USER_LIMIT: 5 })
  const clock = new TestClock(Date.parse('2031-03-04T13:10:00.000Z'))
  const a = await buildTestApp(t, config, clock)
  const b = await buildTestApp(t, config, clock)
  return { config, a, b, clock, blocker: await schemaClient(t, config) }
}

/** Waits until a statement starting with `prefix` waits on a lock (pg_stat_activity). */
const waitingOnLock = (config: Config, prefix: string) => waitFor(`a statement starting with ${prefix} to wait on a lock`, async () => {
  const client = new pg.Client({ connectionString: config.DATABASE_URL })
  await client.connect()
  try {
    const { rows } = await client.query("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1", [`${prefix}%`])
    return rows.length > 0
  } finally {
    await client.end()
  }
}, 10_000)

const counts = async (app: FastifyInstance) => {
  const { sold, held, left } = (await app.inject('/')).json().sale
  return { sold, held, left }
}

test('a purchase still committing on one instance is never given back by another', async (t) => {
  const { config, a, b, blocker } = await twoInstances(t)
  const { code } = (await checkout(a, 'user_id=alice&id=1')).json()

  // Hold the code's row: A's purchase statement waits on it, then B's void queues behind A.
  await blocker.query('BEGIN')
  await blocker.query('SELECT 1 FROM checkout_attempts WHERE code = $1 FOR UPDATE', [code])
  const buying = purchase(a, code)
  await waitingOnLock(config, 'WITH batch AS')
  const reconciling = b.sales.reconcilePurchases(0)
  await waitingOnLock(config, 'UPDATE checkout_attempts SET settled')
  await blocker.query('COMMIT')

  assert.equal(await reconciling, 0, 'B gave nothing back')
  const res = await buying
  assert.equal(res.statusCode, 200, res.body)
  assert.deepEqual(await sql(a, 'SELECT code FROM purchases'), [{ code }])
  assert.deepEqual(await counts(b), { sold: 1, held: 0, left: 4 })
  assert.equal((await checkout(b, 'user_id=bob&id=1')).json().error, 'item_sold')
})

test('a purchase taken for abandoned is fenced off and its code goes back to reserved: the retry buys', async (t) => {
  const { config, a, b, blocker } = await twoInstances(t)
  const { code } = (await checkout(a, 'user_id=alice&id=1')).json()

  // Hold the purchases table: A's purchase waits before it can settle the code; B puts it back meanwhile.
  await blocker.query('BEGIN')
  await blocker.query('LOCK TABLE purchases IN EXCLUSIVE MODE')
  const buying = purchase(a, code)
  await waitingOnLock(config, 'WITH batch AS')
  assert.equal(await b.sales.reconcilePurchases(0), 1, 'B put the item back')
  await blocker.query('COMMIT')

  const res = await buying
  assert.equal(res.statusCode, 503, res.body)
  assert.deepEqual(await sql(a, 'SELECT code FROM purchases'), [], 'the fenced purchase never committed')
  assert.deepEqual(await sql(a, 'SELECT settled, cardinality(unredeemed) AS fenced FROM checkout_attempts WHERE code = $1', [code]), [{ settled: null, fenced: 1 }])
  assert.deepEqual(await counts(a), { sold: 0, held: 1, left: 4 }, 'the code holds its item again')
  assert.equal((await checkout(b, 'user_id=bob&id=1')).json().error, 'item_reserved')
  const retry = await purchase(b, code)
  assert.equal(retry.statusCode, 200, `alice's retry buys: ${retry.body}`)
  assert.deepEqual(await sql(a, 'SELECT code FROM purchases'), [{ code }])
  assert.deepEqual(await counts(a), { sold: 1, held: 0, left: 4 })
})

test('a purchase taken for abandoned after its code expired is voided, and its item goes straight back on sale', async (t) => {
  const { config, a, b, blocker, clock } = await twoInstances(t)
  const { code, expires_at: expiresAt } = (await checkout(a, 'user_id=alice&id=1')).json()

  await blocker.query('BEGIN')
  await blocker.query('LOCK TABLE purchases IN EXCLUSIVE MODE')
  const buying = purchase(a, code)
  await waitingOnLock(config, 'WITH batch AS')
  clock.set(expiresAt)
  assert.equal(await b.sales.reconcilePurchases(0), 1, 'B gave the item back')
  await blocker.query('COMMIT')

  const res = await buying
  assert.equal(res.statusCode, 410)
  assert.equal(res.json().error, 'code_expired')
  assert.deepEqual(await sql(a, 'SELECT code FROM purchases'), [])
  assert.deepEqual(await sql(a, 'SELECT settled FROM checkout_attempts WHERE code = $1', [code]), [{ settled: 'voided' }])
  assert.deepEqual(await counts(a), { sold: 0, held: 0, left: 5 }, 'back on sale at once')
  assert.equal((await purchase(a, code)).json().error, 'code_expired', 'the voided code stays dead')
  const next = (await checkout(b, 'user_id=bob&id=1')).json()
  assert.equal((await purchase(b, next.code)).statusCode, 200, 'and someone else buys the item')
})

test('the unredeem fence holds against a purchase statement already running: it re-reads the fenced row and refuses; a new redemption buys', async (t) => {
  const { config, a, blocker, clock } = await twoInstances(t)
  const { code } = (await checkout(a, 'user_id=alice&id=1')).json()
  const sale = await a.sales.currentSale(clock.ms)
  const repository = new SaleRepository(a.pg.pool)
  const write = writePurchases(a.pg.pool)
  const row = { saleId: sale.id, saleStartsAt: sale.startsAt, itemId: 1, userId: 'alice', code, priceCents: (sale.catalog[1] as CatalogItem).priceCents, purchasedAt: clock.ms }

  // The code's row is locked: the fence queues for it first, then the purchase statement (its
  // snapshot taken, the row seen unfenced) queues behind the fence.
  await blocker.query('BEGIN')
  await blocker.query('SELECT 1 FROM checkout_attempts WHERE code = $1 FOR UPDATE', [code])
  const fencing = repository.releaseRedemptions(sale, [{ code, token: 'first' }], clock.ms)
  await waitingOnLock(config, 'UPDATE checkout_attempts SET settled')
  const late = write([{ ...row, redemption: 'first' }])
  await waitingOnLock(config, 'WITH batch AS')
  await blocker.query('COMMIT')

  assert.deepEqual(await fencing, [{ code, voided: false }], 'put back, not voided: the code has not expired')
  assert.deepEqual(await late, [null], 'the fenced redemption never commits')
  assert.deepEqual(await repository.releaseRedemptions(sale, [{ code, token: 'first' }], clock.ms), [{ code, voided: false }], 'fencing again is harmless')
  assert.deepEqual(await sql(a, 'SELECT unredeemed FROM checkout_attempts WHERE code = $1', [code]), [{ unredeemed: ['first'] }], 'listed once')
  const [id] = await write([{ ...row, redemption: 'second' }])
  assert.equal(typeof id, 'number', 'a new redemption of the code buys')
  assert.deepEqual(await repository.releaseRedemptions(sale, [{ code, token: 'second' }], clock.ms), [], 'a purchased code is not put back')
  assert.deepEqual((await repository.settlementOf(sale, code, 'first')).released, true)
})
