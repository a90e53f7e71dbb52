import assert from 'node:assert/strict'
import { readdirSync } from 'node:fs'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { runner } from 'node-pg-migrate'
import pg from 'pg'
import { prefillHistory } from '../../bench/history.js'
import { newAttemptId } from '../../src/lib/attempt-id.js'
import { migrate, migrationsDir } from '../../src/db/migrate.js'
import { isExpired } from '../../src/db/partitions.js'
import { writeAttempts, writePurchases } from '../../src/sale/record-writers.js'
import { reportCountsSql, reportOutcomesSql, SaleRepository } from '../../src/sale/repository.js'
import { waitFor } from '../support/fault-kit.js'
import { buildTestApp, checkout, isolatedConfig, purchase, schemaClient, sql, TestClock } from '../support/helpers.js'

const DAY_MS = 86_400_000
const T0 = '2031-03-04T13:10:00.000Z'
const utcDay = (ms: number) => new Date(ms).toISOString().slice(0, 10)
const daysFrom = (first: number, count: number) => Array.from({ length: count }, (_, i) => utcDay(first + i * DAY_MS))

/** Attached day partitions as `parent day` strings, sorted. */
async function attachedDays (app: Awaited<ReturnType<typeof buildTestApp>>): Promise<string[]> {
  return (await app.partitions.partitions()).filter((p) => p.state === 'attached').map((p) => `${p.parent} ${p.day}`).sort()
}
const bothTables = (days: string[]) => days.flatMap((d) => [`checkout_attempts ${d}`, `purchases ${d}`]).sort()

test('partitions exist ahead of the next sales, and the maintenance timer adds the days that come into range', async (t) => {
  const clock = new TestClock(Date.parse(T0))
  const app = await buildTestApp(t, isolatedConfig(t, { PARTITIONS_AHEAD_DAYS: 3, PARTITION_MAINTENANCE_INTERVAL_MS: 1000 }), clock)
  assert.deepEqual(await attachedDays(app), bothTables(daysFrom(clock.ms, 4)), 'today and the next 3 days, before the first request')

  // The last sale of the day and the first of the next both find their partition.
  const dayOfAttempt = async (iso: string, user: string) => {
    clock.set(iso)
    assert.equal((await checkout(app, `user_id=${user}&id=1`)).statusCode, 200)
    const [row] = await sql<{ partition: string }>(app, 'SELECT tableoid::regclass::text AS partition FROM checkout_attempts WHERE user_id = $1', [user])
    return row?.partition
  }
  assert.equal(await dayOfAttempt('2031-03-04T23:59:30.000Z', 'late'), 'checkout_attempts_p20310304')
  assert.equal(await dayOfAttempt('2031-03-05T00:00:30.000Z', 'early'), 'checkout_attempts_p20310305')

  clock.set('2031-03-06T00:30:00.000Z')
  await waitFor('the purchases partition of 2031-03-09 to be attached', async () => (await attachedDays(app)).includes('purchases 2031-03-09'), 5000, () => attachedDays(app))
  assert.deepEqual(await attachedDays(app), bothTables(daysFrom(Date.parse('2031-03-04T00:00:00.000Z'), 6)))
})

test('the migration to partitioned tables keeps every row, id, settlement and constraint', async (t) => {
  const config = isolatedConfig(t)
  const client = await schemaClient(t, config)
  const partitioning = readdirSync(migrationsDir).filter((f) => f.endsWith('.sql')).sort().indexOf('1764600000000_partitioned-records.sql')
  assert.ok(partitioning > 0)
  await runner({ dbClient: client, dir: migrationsDir, direction: 'up', count: partitioning, migrationsTable: 'pgmigrations', schema: config.DATABASE_SCHEMA, createSchema: true, checkOrder: true, advisoryLockMode: 'wait', log: () => {} })

  // Yesterday-ish and far-future sales (partitions must cover both ends), a sale-less attempt, every kind of row.
  await client.query(`
    INSERT INTO sales (id, starts_at, ends_at, item_count, user_limit) VALUES
      (1, '2026-03-01 10:00Z', '2026-03-01 11:00Z', 3, 2), (2, '2031-03-03 12:00Z', '2031-03-03 13:00Z', 3, 2);
    INSERT INTO items SELECT s.id, i, 'Item #' || i, 'd', 100 * i FROM sales s, generate_series(1, 3) i;
    INSERT INTO checkout_attempts (sale_id, user_id, item_id, outcome, code, expires_at, attempted_at, settled)
    SELECT s.id, 'u1', 1, 'accepted', 'code-a-' || s.id, s.starts_at + interval '10 min', s.starts_at + interval '1 min', 'purchased' FROM sales s
    UNION ALL SELECT s.id, 'u2', 2, 'accepted', 'code-b-' || s.id, s.starts_at + interval '10 min', s.starts_at + interval '2 min', 'voided' FROM sales s
    UNION ALL SELECT s.id, 'u2', 3, 'accepted', 'code-c-' || s.id, s.starts_at + interval '10 min', s.starts_at + interval '3 min', NULL FROM sales s
    UNION ALL SELECT s.id, 'u3', 1, 'item_sold', NULL, NULL, s.starts_at + interval '4 min', NULL FROM sales s
    UNION ALL SELECT NULL, 'u4', NULL, 'no_active_sale', NULL, NULL, '2026-03-02 08:00Z', NULL
    UNION ALL SELECT NULL, NULL, NULL, 'invalid_request', NULL, NULL, '2031-03-03 11:59Z', NULL;
    UPDATE checkout_attempts SET attempt_id = gen_random_uuid() WHERE outcome = 'invalid_request';
    INSERT INTO purchases (sale_id, item_id, user_id, code, price_cents, purchased_at)
    SELECT s.id, 1, 'u1', 'code-a-' || s.id, 100, s.starts_at + interval '5 min' FROM sales s;`)
  const snapshot = async () => ({
    attempts: (await client.query('SELECT id, attempt_id, sale_id, user_id, item_id, outcome, code, expires_at, attempted_at, settled FROM checkout_attempts ORDER BY id')).rows,
    purchases: (await client.query('SELECT id, sale_id, item_id, user_id, code, price_cents, purchased_at FROM purchases ORDER BY id')).rows
  })
  const before = await snapshot()
  assert.equal(before.attempts.length, 10)

  await migrate(client, config.DATABASE_SCHEMA, () => {})

  assert.deepEqual(await snapshot(), before, 'every row, with its id, as it was')
  const { rows: [keys] } = await client.query<{ wrong: number }>(
    `SELECT count(*)::int AS wrong FROM checkout_attempts a LEFT JOIN sales s ON s.id = a.sale_id
     WHERE a.sale_starts_at IS DISTINCT FROM coalesce(s.starts_at, a.attempted_at)`)
  assert.equal(keys?.wrong, 0, 'partition key: the sale start, or the attempt time without a sale')
  const { rows: located } = await client.query<{ partition: string, n: number }>(
    'SELECT tableoid::regclass::text AS partition, count(*)::int AS n FROM checkout_attempts GROUP BY 1 ORDER BY 1')
  assert.deepEqual(located.map((r) => [r.partition, r.n]), [
    ['checkout_attempts_p20260301', 4], ['checkout_attempts_p20260302', 1], ['checkout_attempts_p20310303', 5]])

  // Ids continue past the old ones; the constraints still refuse what they refused.
  const { rows: [next] } = await client.query<{ id: string }>(
    "INSERT INTO checkout_attempts (sale_starts_at, outcome, attempted_at) VALUES ('2031-03-03 14:00Z', 'no_active_sale', '2031-03-03 14:00Z') RETURNING id")
  assert.ok(Number(next?.id) > Math.max(...before.attempts.map((r) => Number(r.id))))
  const refused = async (text: string) => client.query(text).then(() => 'committed', (e: { code: string }) => e.code)
  assert.equal(await refused(
    "INSERT INTO purchases (sale_id, sale_starts_at, item_id, user_id, code, price_cents, purchased_at) SELECT id, starts_at, 1, 'u9', 'code-c-' || id, 100, now() FROM sales WHERE starts_at = '2031-03-03 12:00Z'"),
  '23505', 'a second sale of one item')
  assert.equal(await refused(
    "INSERT INTO purchases (sale_id, sale_starts_at, item_id, user_id, code, price_cents, purchased_at) SELECT id, starts_at, 2, 'u9', 'never-issued', 100, now() FROM sales WHERE starts_at = '2031-03-03 12:00Z'"),
  '23503', 'a purchase of a code never issued in that sale')
  assert.equal(await refused(
    "INSERT INTO checkout_attempts (sale_id, sale_starts_at, outcome, attempted_at) SELECT id, starts_at + interval '1 hour', 'item_sold', now() FROM sales WHERE starts_at = '2031-03-03 12:00Z'"),
  '23503', 'a sale id with another sale\'s start')
  assert.equal(await refused(
    "UPDATE checkout_attempts SET sale_starts_at = sale_starts_at + interval '1 hour' WHERE code = (SELECT 'code-c-' || id FROM sales WHERE starts_at = '2031-03-03 12:00Z')"),
  '23503', 'an attempt moved to another sale\'s start')
  await client.query("DELETE FROM sales WHERE starts_at = '2031-03-03 12:00Z'")
  const { rows: [orphans] } = await client.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM checkout_attempts a WHERE a.sale_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM sales s WHERE s.id = a.sale_id)')
  assert.equal(orphans?.n, 0, 'a deleted sale takes its attempts along')
})

test('retention drops exactly the expired days while a stampede runs: no error, no lost row of the live sale', async (t) => {
  const clock = new TestClock(Date.parse(T0))
  const config = isolatedConfig(t, { SALE_ITEMS: 3000, USER_LIMIT: 10, ATTEMPTS_RETENTION_DAYS: 30, PARTITIONS_AHEAD_DAYS: 2 })
  const app = await buildTestApp(t, config, clock)
  // On a connection of its own: the pool's client-side query timeout (PG_QUERY_TIMEOUT_MS + 1 s)
  // cut a day's INSERT short once on a busy CI host.
  await prefillHistory(await schemaClient(t, config), { days: 40, attempts: 40 * 24 * 20, purchasesPerSale: 3, now: clock.ms })
  const kept = async () => (await sql<{ n: number }>(app,
    "SELECT count(*)::int AS n FROM checkout_attempts WHERE sale_starts_at >= '2031-02-02' AND sale_starts_at < '2031-03-04 13:00Z'"))[0]?.n
  const keptBefore = await kept()

  const statuses = new Map<number, number>()
  const codes = new Set<string>()
  const bought = new Map<string, number>()
  const load = { stop: false }
  const buyer = async (u: number) => {
    while (!load.stop) {
      const res = await checkout(app, `user_id=s${u}-${Math.floor(Math.random() * 40)}&id=${1 + Math.floor(Math.random() * 3000)}`)
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
      if (res.statusCode !== 200) continue
      const code = res.json<{ code: string }>().code
      codes.add(code)
      const paid = await purchase(app, code)
      statuses.set(paid.statusCode, (statuses.get(paid.statusCode) ?? 0) + 1)
      if (paid.statusCode === 200) bought.set(code, paid.json<{ purchase_id: number }>().purchase_id)
    }
  }
  const stampede = Promise.all(Array.from({ length: 30 }, (_, u) => buyer(u)))
  await sleep(300)
  const dropped = await app.partitions.dropExpired(clock.ms).finally(() => sleep(300).then(() => { load.stop = true }))
  await stampede

  // 2031-01-23 .. 2031-02-01 end at least 30 days before 2031-03-04 13:10; 2031-02-02 ends after.
  const expired = daysFrom(Date.parse('2031-01-23T00:00:00.000Z'), 10)
  assert.ok(expired.every((d) => isExpired(d, clock.ms, 30)) && !isExpired('2031-02-02', clock.ms, 30))
  // The service's own start-up pass may run alongside this call (one waits for the other), so what
  // this call dropped is some of the expired days; what is left attached says all of them went.
  const expiredTables = bothTables(expired).map((p) => p.replace(/ (\d{4})-(\d\d)-(\d\d)$/, '_p$1$2$3'))
  assert.deepEqual(dropped.filter((name) => !expiredTables.includes(name)), [], 'only expired days dropped')
  assert.deepEqual(await attachedDays(app), bothTables(daysFrom(Date.parse('2031-02-02T00:00:00.000Z'), 30 + 3)))
  assert.deepEqual((await app.partitions.partitions()).filter((p) => p.state !== 'attached'), [], 'nothing left detached')

  assert.ok((statuses.get(200) ?? 0) > 50, `the stampede ran: ${JSON.stringify([...statuses])}`)
  assert.deepEqual([...statuses.keys()].filter((s) => s >= 500), [], `no 5xx: ${JSON.stringify([...statuses])}`)
  const committed = new Set((await sql<{ code: string }>(app, "SELECT code FROM checkout_attempts WHERE outcome = 'accepted' AND sale_starts_at = '2031-03-04 13:00Z'")).map((r) => r.code))
  for (const code of codes) assert.ok(committed.has(code), `acknowledged checkout ${code} is committed`)
  const purchases = new Map((await sql<{ code: string, id: string }>(app, "SELECT code, id FROM purchases WHERE sale_starts_at = '2031-03-04 13:00Z'")).map((r) => [r.code, Number(r.id)]))
  for (const [code, id] of bought) assert.equal(purchases.get(code), id, `acknowledged purchase ${id} is committed`)
  assert.equal(await kept(), keptBefore, 'the kept days lost nothing')
})

test('the history prefill is a bulk load: it runs to the end on a connection whose statement_timeout is shorter (as the pool sets it), and leaves that timeout as it was', async (t) => {
  const clock = new TestClock(Date.parse(T0))
  const config = isolatedConfig(t)
  await buildTestApp(t, config, clock) // migrates the schema
  // As a connection of the service's pool: the timeout is a start-up parameter of the session.
  const client = await schemaClient(t, config, { statement_timeout: 100 })
  const filled = await prefillHistory(client, { days: 1, attempts: 120_000, purchasesPerSale: 3, now: clock.ms })
  assert.equal(filled.attempts, 120_000)
  assert.equal((await client.query('SHOW statement_timeout')).rows[0]?.statement_timeout, '100ms')
})

/** Relation names a plan reads or writes (EXPLAIN FORMAT JSON), recursively. */
function relationsOf (plan: Record<string, unknown>): string[] {
  const own = typeof plan['Relation Name'] === 'string' ? [plan['Relation Name']] : []
  return [...own, ...((plan.Plans as Array<Record<string, unknown>> | undefined) ?? []).flatMap(relationsOf)]
}

test('operator queries, the writers and the settlement fence touch only the current partition (EXPLAIN on a prefilled database)', async (t) => {
  const clock = new TestClock(Date.parse(T0))
  const config = isolatedConfig(t, { SALE_ITEMS: 100 })
  const app = await buildTestApp(t, config, clock)
  await prefillHistory(await schemaClient(t, config), { days: 3, attempts: 60_000, purchasesPerSale: 20, now: clock.ms })
  const code = (await checkout(app, 'user_id=alice&id=7')).json<{ code: string }>().code
  assert.equal((await purchase(app, (await checkout(app, 'user_id=bob&id=8')).json<{ code: string }>().code)).statusCode, 200)
  const sale = await app.sales.currentSale(clock.ms)
  assert.ok(sale)

  // Every statement the repository and the writers send is planned (EXPLAIN, with its real
  // parameters, as an unnamed statement); reads also run, so the code goes on.
  const touched = new Map<string, string[]>()
  const explaining = {
    query: async (statement: string | { text: string, values: unknown[] }, params: unknown[]) => {
      const { text, values } = typeof statement === 'string' ? { text: statement, values: params } : statement
      const { rows: [plan] } = await app.pg.query<{ 'QUERY PLAN': Array<{ Plan: Record<string, unknown> }> }>(`EXPLAIN (FORMAT JSON) ${text}`, values)
      touched.set(text.trim().split('\n')[0] as string, relationsOf(plan?.['QUERY PLAN'][0]?.Plan ?? {}).filter((r) => /^(checkout_attempts|purchases)/.test(r)))
      return /^\s*SELECT/i.test(text) ? app.pg.query(text, values) : { rows: [] }
    }
  } as unknown as pg.Pool
  const repository = new SaleRepository(explaining)
  assert.equal((await repository.report(clock.ms, 1))[0]?.id, sale.id, 'sale:status reports the current sale first')
  await repository.acceptedCheckouts(sale)
  await repository.purchaseCount(sale)
  await repository.purchasedItems(sale)
  await repository.unsettledCodesOfItems(sale, [7])
  await repository.settlementOf(sale, code)
  await repository.releaseRedemptions(sale, [{ code, token: 'r0' }], clock.ms)
  await repository.voidCodes(sale, [code])
  await writePurchases(explaining)([{ saleId: sale.id, saleStartsAt: sale.startsAt, itemId: 7, userId: 'alice', code, priceCents: 100, purchasedAt: clock.ms, redemption: 'r1' }])
  await writeAttempts(explaining, { prepared: true })([{ attemptId: newAttemptId(clock.ms), saleId: sale.id, saleStartsAt: sale.startsAt, userId: 'carol', itemId: 9, outcome: 'item_sold', code: null, expiresAt: null, attemptedAt: clock.ms }])

  assert.ok(touched.size >= 10, `${touched.size} statements planned`)
  for (const [statement, relations] of touched) {
    if (/FROM sales\b/.test(statement) && relations.length === 0) continue // the sale lookup itself
    assert.ok(relations.length > 0, `${statement}: reads or writes the records`)
    for (const relation of relations) {
      assert.match(relation, /^(checkout_attempts|purchases)(_p20310304)?$/, `${statement}: ${relations.join(', ')}`)
    }
  }
  // The history is there to be skipped: three days before today, with their partitions.
  const [history] = await sql<{ n: number }>(app, "SELECT count(*)::int AS n FROM checkout_attempts WHERE sale_starts_at < '2031-03-04'")
  assert.ok((history?.n ?? 0) >= 50_000)
  // reportCountsSql and reportOutcomesSql are what sale:status runs; GET / reads the counts from Redis.
  assert.ok([reportCountsSql, reportOutcomesSql].every((q) => touched.has(q.trim().split('\n')[0] as string)))
})
