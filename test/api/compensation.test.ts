import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { waitFor } from '../support/fault-kit.js'
import { buildTestApp, checkout, isolatedConfig, purchase, sql, TestClock } from '../support/helpers.js'

/**
 * Postgres refusing a write after Redis already decided: a trigger in this test's schema makes
 * the INSERT fail for real. The request must not be acknowledged, and Redis must be put back
 * (the compensation scripts) so it never counts what Postgres does not hold.
 */
async function failInserts (app: FastifyInstance, table: string, when: string): Promise<() => Promise<unknown>> {
  await sql(app, `CREATE FUNCTION refuse_write() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'injected failure'; END $$`)
  await sql(app, `CREATE TRIGGER refuse_write BEFORE INSERT ON ${table} FOR EACH ROW WHEN (${when}) EXECUTE FUNCTION refuse_write()`)
  return () => sql(app, `DROP TRIGGER refuse_write ON ${table}; DROP FUNCTION refuse_write()`)
}

const counts = async (app: FastifyInstance) => {
  const { sold, held, left } = (await app.inject('/')).json().sale
  return { sold, held, left }
}

test('an accepted checkout that Postgres does not commit is a 503 and its item goes back on sale', async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: 5, USER_LIMIT: 1 })
  const app = await buildTestApp(t, config, new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))
  const restore = await failInserts(app, 'checkout_attempts', "NEW.outcome = 'accepted'")

  const res = await checkout(app, 'user_id=alice&id=1')
  assert.equal(res.statusCode, 503)
  assert.equal(res.json().error, 'service_unavailable')
  assert.deepEqual(await counts(app), { sold: 0, held: 0, left: 5 }, 'the item and the user slot were given back')

  await restore()
  assert.equal((await checkout(app, 'user_id=alice&id=1')).statusCode, 200, 'the same user takes the same item')
  // The failed attempt is a row too: its 503, written from the spool (the trigger lets that one through).
  await waitFor('the spool to be replayed into Postgres (0 bytes left)', async () => app.attemptSpool.bytes === 0, 5000, () => app.attemptSpool.bytes)
  const rows = await sql<{ outcome: string }>(app, "SELECT outcome FROM checkout_attempts WHERE user_id = 'alice' ORDER BY outcome")
  assert.deepEqual(rows.map((r) => r.outcome), ['accepted', 'service_unavailable'], 'nothing half-written by the failed attempt')
})

test('a purchase that Postgres does not commit is a 503, not a sale, and the code can be redeemed after', async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: 5, USER_LIMIT: 2 })
  const app = await buildTestApp(t, config, new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))
  const { code } = (await checkout(app, 'user_id=alice&id=1')).json()
  const restore = await failInserts(app, 'purchases', 'true')

  const res = await purchase(app, code)
  assert.equal(res.statusCode, 503)
  assert.equal(res.json().error, 'service_unavailable')
  assert.deepEqual(await counts(app), { sold: 0, held: 1, left: 4 }, 'Redis counts no sale; the code still holds its item')
  assert.equal((await checkout(app, 'user_id=bob&id=1')).json().error, 'item_reserved')

  await restore()
  const bought = await purchase(app, code)
  assert.equal(bought.statusCode, 200)
  assert.equal(bought.json().user_purchases, 1, 'the failed try did not count against the user')
  assert.deepEqual(await counts(app), { sold: 1, held: 0, left: 4 })
  assert.equal((await sql(app, 'SELECT 1 FROM purchases')).length, 1)
})
