import assert from 'node:assert/strict'
import { test } from 'node:test'
import pg from 'pg'
import { waitFor } from '../support/fault-kit.js'
import { buildTestApp, checkout, isolatedConfig, purchase, sql, TestClock } from '../support/helpers.js'

test('instances preparing together write one sale, seeded once, with a deterministic catalog', async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: 50 })
  const clock = new TestClock(Date.parse('2031-03-04T13:37:00.000Z'))
  const first = await buildTestApp(t, config, clock)
  // A purchase before the other instances prepare: their preparation must not reset the sold counter.
  const { code } = (await checkout(first, 'user_id=a&id=1')).json()
  assert.equal((await purchase(first, code)).statusCode, 200)

  const others = await Promise.all([1, 2, 3].map(() => buildTestApp(t, config, clock)))
  await Promise.all([first, ...others].map((app) => app.sales.prepareSale(Date.parse('2031-03-04T13:00:00.000Z'))))

  const sales = await sql<{ id: string, starts_at: Date, item_count: number }>(first, 'SELECT id, starts_at, item_count FROM sales')
  assert.equal(sales.length, 1)
  assert.equal(sales[0]?.starts_at.toISOString(), '2031-03-04T13:00:00.000Z')
  const [{ n } = { n: 0 }] = await sql<{ n: number }>(first, 'SELECT count(*)::int AS n FROM items')
  assert.equal(n, 50)
  for (const app of others) {
    assert.equal((await app.inject('/')).json().sale.sold, 1)
    assert.equal((await checkout(app, 'user_id=b&id=1')).json().error, 'item_sold')
  }

  // The same hour yields the same catalog in another database schema.
  const elsewhere = await buildTestApp(t, isolatedConfig(t, { SALE_ITEMS: 50 }), clock)
  const catalog = 'SELECT id, name, description, price_cents FROM items ORDER BY id'
  assert.deepEqual(await sql(elsewhere, catalog), await sql(first, catalog))
})

test('each hour gets its own sale and prices', async (t) => {
  const clock = new TestClock(Date.parse('2031-03-04T13:37:00.000Z'))
  const app = await buildTestApp(t, isolatedConfig(t), clock)
  clock.set('2031-03-04T14:00:00.000Z')
  await app.sales.prepareAhead()
  const rows = await sql<{ sale_id: string, prices: number[] }>(app,
    'SELECT sale_id, array_agg(price_cents ORDER BY id) AS prices FROM items GROUP BY sale_id ORDER BY sale_id')
  assert.equal(rows.length, 2)
  assert.notDeepEqual(rows[0]?.prices, rows[1]?.prices)
})

test('a preparation that fails at start-up does not stop the service: it starts, answers 503, and a later tick opens the sale', async (t) => {
  const config = isolatedConfig(t, { PG_QUERY_TIMEOUT_MS: 300 })
  // Another instance holds the preparation lock (frozen mid-preparation) for longer than a query may wait.
  const holder = new pg.Client({ connectionString: config.DATABASE_URL })
  await holder.connect()
  t.after(() => holder.end())
  await holder.query('BEGIN')
  await holder.query("SELECT pg_advisory_xact_lock(hashtext($1 || '.sales'))", [config.DATABASE_SCHEMA])

  const app = await buildTestApp(t, config, new TestClock(Date.parse('2031-03-04T13:37:00.000Z')))
  const refused = await checkout(app, 'user_id=a&id=1')
  assert.equal(refused.statusCode, 503)
  assert.match(refused.json().message, /could not be prepared/)

  await holder.query('COMMIT')
  await waitFor('the roll to open sale 1', async () => (await app.inject('/')).json().sale?.id === 1, 5000, async () => (await app.inject('/')).json().sale)
  assert.equal((await checkout(app, 'user_id=a&id=1')).statusCode, 200)
})
