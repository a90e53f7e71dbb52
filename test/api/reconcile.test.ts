import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import type { FastifyInstance } from 'fastify'
import pg from 'pg'
import type { Config } from '../../src/config.js'
import { waitFor } from '../support/fault-kit.js'
import { buildTestApp, checkout, isolatedConfig, purchase, schemaClient, sql, TestClock } from '../support/helpers.js'

/**
 * Two instances of one sale: A redeems a code and its purchase commit is held up inside Postgres
 * (a lock another transaction holds), while B reconciles and takes A's item for a crashed
 * instance's orphan. Postgres's settlement fence must decide one way for both: either A's
 * purchase stands and B gives nothing back, or B voids it first and A answers that the code
 * expired. Never a 200 for a purchase whose item went back on sale.
 */
async function twoInstances (t: TestContext) {
  const config = isolatedConfig(t, { SALE_ITEMS: 5, USER_LIMIT: 5 })
  const clock = new TestClock(Date.parse('2031-03-04T13:10:00.000Z'))
  const a = await buildTestApp(t, config, clock)
  const b = await buildTestApp(t, config, clock)
  return { config, a, b, blocker: await schemaClient(t, config) }
}

/** Waits until a statement starting with `prefix` waits on a lock (pg_stat_activity). */
const waitingOnLock = (config: Config, prefix: string) => waitFor(async () => {
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

test('a purchase voided first is refused, and its item goes straight back on sale', async (t) => {
  const { config, a, b, blocker } = await twoInstances(t)
  const { code } = (await checkout(a, 'user_id=alice&id=1')).json()

  // Hold the purchases table: A's purchase waits before it can settle the code; B voids it meanwhile.
  await blocker.query('BEGIN')
  await blocker.query('LOCK TABLE purchases IN EXCLUSIVE MODE')
  const buying = purchase(a, code)
  await waitingOnLock(config, 'WITH batch AS')
  assert.equal(await b.sales.reconcilePurchases(0), 1, 'B gave the item back')
  await blocker.query('COMMIT')

  const res = await buying
  assert.equal(res.statusCode, 410)
  assert.equal(res.json().error, 'code_expired')
  assert.deepEqual(await sql(a, 'SELECT code FROM purchases'), [])
  assert.deepEqual(await sql(a, 'SELECT settled FROM checkout_attempts WHERE code = $1', [code]), [{ settled: 'voided' }])
  assert.deepEqual(await counts(a), { sold: 0, held: 0, left: 5 }, 'not held until the code expires: back at once')
  assert.equal((await purchase(a, code)).json().error, 'code_expired', 'the voided code stays dead')
  const next = (await checkout(b, 'user_id=bob&id=1')).json()
  assert.equal((await purchase(b, next.code)).statusCode, 200, 'and someone else buys the item')
})
