/**
 * History for `npm run bench -- --history=<rows>`: fills a schema with tens of millions of
 * checkout attempts over past days' sales (generate_series, in Postgres, no client round trips),
 * so the stampede can run against a full database right after one against an empty one; and
 * measures the CPU of the Postgres backends serving the service, to report it per committed row.
 * test/load/partitions.test.ts uses the same prefill, small, for its EXPLAIN checks.
 */
import { readFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import type pg from 'pg'
import { migrate } from '../src/db/migrate.js'
import { localPortsTo } from './sockets.js'
import { median } from './stats.js'

const DAY_MS = 86_400_000
const HOUR_MS = 3_600_000

export interface HistoryOptions {
  /** Checkout attempts in all, spread evenly over every hourly sale of the past `days`. */
  attempts: number
  days: number
  /** Items sold per past sale (each has its accepted, settled attempt, its item and its purchase). */
  purchasesPerSale: number
  /** The service's clock: history fills the `days` whole UTC days before today's. */
  now: number
  /** Progress per day filled. */
  log?: (message: string) => void
}

export interface HistoryFilled { sales: number, attempts: number, purchases: number, seconds: number }

/**
 * Fills the past days on a migrated schema (the client's search_path): partitions, one sale per hour
 * with the catalog rows its purchases reference, `purchasesPerSale` accepted and purchased
 * attempts per sale, and refusals (item_reserved / item_sold) for the rest. A day per transaction.
 * Needs a superuser (as the bench's local Postgres is).
 */
export async function prefillHistory (client: pg.ClientBase, options: HistoryOptions): Promise<HistoryFilled> {
  // A bulk load, not the hot path: the service's statement_timeout (on a connection from its pool, as
  // the tests use) must not cut the partition DDL or a day's inserts short on a busy machine.
  await client.query('SET statement_timeout = 0')
  try {
    return await fillDays(client, options)
  } finally {
    await client.query('RESET statement_timeout')
  }
}

async function fillDays (client: pg.ClientBase, options: HistoryOptions): Promise<HistoryFilled> {
  const started = Date.now()
  // Whole past days: today's partition, where the service writes, stays as it would be without history.
  const today = Math.floor(options.now / DAY_MS) * DAY_MS
  const firstDay = today - options.days * DAY_MS
  const hours = Math.floor((today - firstDay) / HOUR_MS)
  const perSale = Math.max(options.purchasesPerSale, Math.ceil(options.attempts / Math.max(hours, 1)))
  const filled = { sales: 0, attempts: 0, purchases: 0 }
  const iso = (ms: number) => new Date(ms).toISOString()
  await client.query('SELECT flash_sale_add_day_partitions($1::date, $2::date)', [iso(firstDay).slice(0, 10), iso(options.now).slice(0, 10)])
  for (let day = firstDay; day < today; day += DAY_MS) {
    const until = day + DAY_MS
    await client.query('BEGIN')
    // The rows reference each other correctly by construction: skip the per-row foreign key
    // triggers (superuser only), which cost more than the inserts. UNIQUE and CHECK still apply.
    await client.query('SET LOCAL session_replication_role = replica')
    const { rows: sales } = await client.query<{ id: string }>(
      `INSERT INTO sales (id, starts_at, ends_at, item_count, user_limit)
       SELECT (SELECT coalesce(max(id), 0) FROM sales) + row_number() OVER (ORDER BY h), h, h + interval '1 hour', 10000, 10
       FROM generate_series($1::timestamptz, $2::timestamptz - interval '1 hour', interval '1 hour') AS h
       WHERE NOT EXISTS (SELECT 1 FROM sales WHERE starts_at = h)
       RETURNING id`, [iso(day), iso(until)])
    const ids = sales.map((s) => s.id)
    await client.query(
      `INSERT INTO items (sale_id, id, name, description, price_cents)
       SELECT s, i, 'Item #' || i, 'history', 100 + i FROM unnest($1::bigint[]) AS s, generate_series(1, $2::int) AS i`,
      [ids, options.purchasesPerSale])
    // Attempt g of a sale: the first purchasesPerSale are accepted and purchased (item g), the rest refused.
    const attempts = await client.query(
      `INSERT INTO checkout_attempts (sale_id, sale_starts_at, user_id, item_id, outcome, code, expires_at, attempted_at, settled)
       SELECT s.id, s.starts_at, 'u' || (g % 50000), CASE WHEN g <= $2 THEN g ELSE 1 + g % 10000 END,
              CASE WHEN g <= $2 THEN 'accepted' WHEN g % 2 = 0 THEN 'item_reserved' ELSE 'item_sold' END,
              CASE WHEN g <= $2 THEN 'h' || s.id || '.' || g END,
              CASE WHEN g <= $2 THEN s.starts_at + interval '10 minutes' END,
              s.starts_at + (g % 3600000) * interval '1 millisecond',
              CASE WHEN g <= $2 THEN 'purchased' END
       FROM sales s CROSS JOIN generate_series(1, $3::int) AS g
       WHERE s.id = ANY($1::bigint[])`, [ids, options.purchasesPerSale, perSale])
    const purchases = await client.query(
      `INSERT INTO purchases (sale_id, sale_starts_at, item_id, user_id, code, price_cents, purchased_at)
       SELECT s.id, s.starts_at, g, 'u' || (g % 50000), 'h' || s.id || '.' || g, 100 + g, s.starts_at + interval '1 minute'
       FROM sales s CROSS JOIN generate_series(1, $2::int) AS g
       WHERE s.id = ANY($1::bigint[])`, [ids, options.purchasesPerSale])
    await client.query('COMMIT')
    filled.sales += ids.length
    filled.attempts += attempts.rowCount ?? 0
    filled.purchases += purchases.rowCount ?? 0
    options.log?.(`  history ${iso(day).slice(0, 10)}: ${filled.attempts.toLocaleString('en-US')} attempts so far, ${Math.round((Date.now() - started) / 1000)} s`)
  }
  // As old days are in production: vacuumed (visibility map set, hint bits written) and analyzed, so
  // autovacuum does not pick the fresh rows up in the middle of the run being measured.
  await client.query('VACUUM (ANALYZE) sales, items, checkout_attempts, purchases')
  return { ...filled, seconds: (Date.now() - started) / 1000 }
}

/**
 * CPU time of a process in ms, from /proc/<pid>/schedstat (nanoseconds on the CPU): /proc/<pid>/stat
 * counts in 10 ms ticks, too coarse for ten backends that each run a few hundred ms in a stampede.
 */
function cpuMs (pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6
  } catch {
    return 0 // exited
  }
}

/**
 * CPU (time on a CPU, ms) of the Postgres backends serving process `servicePid` (found by the
 * ports of its connections, so other clients of the same server do not count), as a map from
 * backend pid. Difference two samples to get a run's cost; backends that did not exist at the
 * first sample count from zero.
 */
export async function backendCpu (admin: pg.ClientBase, servicePid: number, postgresPort: number): Promise<Map<number, number>> {
  const ports = localPortsTo(servicePid, postgresPort)
  const { rows } = await admin.query<{ pid: number }>(
    "SELECT pid FROM pg_stat_activity WHERE client_addr IN ('127.0.0.1', '::1') AND client_port = ANY($1::int[])", [ports])
  return new Map(rows.map((r) => [r.pid, cpuMs(r.pid)]))
}

/** Totals of one statement in pg_stat_statements, keyed by queryid. */
interface StatementTotals { query: string, calls: number, rows: number, execMs: number, blksHit: number, blksWritten: number }

/**
 * pg_stat_statements of this database, if the server loads it (shared_preload_libraries; the
 * shared server on 5432 does not): what shows which statement costs more with history. Empty
 * otherwise.
 */
async function statementTotals (admin: pg.ClientBase): Promise<Map<string, StatementTotals>> {
  try {
    const { rows } = await admin.query<StatementTotals & { id: string }>(
      `SELECT queryid::text AS id, query, calls::float8 AS calls, rows::float8 AS rows, total_exec_time AS "execMs",
              shared_blks_hit::float8 AS "blksHit", shared_blks_written::float8 AS "blksWritten"
       FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`)
    return new Map(rows.map(({ id, ...totals }) => [id, totals]))
  } catch {
    return new Map()
  }
}

/** The `top` statements run between two samples by execution time, per row: one log line each. */
function statementsBetween (before: Map<string, StatementTotals>, after: Map<string, StatementTotals>, top: number): string[] {
  const ran = [...after].map(([id, a]) => {
    const b = before.get(id)
    const rows = a.rows - (b?.rows ?? 0)
    const perRow = (key: 'execMs' | 'blksHit' | 'blksWritten') => (a[key] - (b?.[key] ?? 0)) / Math.max(rows, 1)
    return { calls: a.calls - (b?.calls ?? 0), rows, execUs: perRow('execMs') * 1000, hit: perRow('blksHit'), written: perRow('blksWritten'), query: a.query }
  }).filter((st) => st.calls > 0).sort((x, y) => y.execUs * y.rows - x.execUs * x.rows)
  return ran.slice(0, top).map((st) => `  ${st.calls} calls, ${st.rows} rows; per row ${st.execUs.toFixed(1)} µs, ` +
    `${st.hit.toFixed(2)} buffer hits, ${st.written.toFixed(3)} buffers written: ${st.query.replace(/\s+/g, ' ').slice(0, 70)}`)
}

export const cpuBetween = (before: Map<number, number>, after: Map<number, number>): number =>
  [...after].reduce((sum, [pid, ms]) => sum + ms - (before.get(pid) ?? 0), 0)

/** What run.ts's stampede gives a hook: the service it started and its schema. */
export interface StampedeService { child: { pid?: number }, schema: string, url: string }

export interface StampedeHooks {
  /** Runs on the schema before the service starts on it. */
  prepare?: (schema: string) => Promise<void>
  /** Called once the service is up; the function it returns is called after the load, before the service stops. */
  measure?: (service: StampedeService) => Promise<() => Promise<Record<string, number>>>
}

export type Stampede = (name: string, hooks: StampedeHooks) => Promise<{
  row: { reqPerSec: number, extra?: Record<string, number | string> }
  expect: { service: StampedeService, checkoutsSent: number }
}>

export interface StampedeCost {
  reqPerSec: number
  checkoutsSent: number
  committedRows: number
  /** Attempt rows per INSERT statement (the service's batches). */
  rowsPerStatement: number
  pgCpuMs: number
  pgCpuUsPerRow: number
  /** Backends the service's pool opened during the run (after openPool: should be none). */
  backendsOpened: number
  /** Load average (1 min) when the run started. */
  load: number
}

export interface HistoryComparison {
  prefill: HistoryFilled
  rounds: number
  /** Every run in the order it ran (rounds alternate: empty first, then full first, ...). */
  runs: Array<StampedeCost & { history: boolean }>
  /** Medians over the rounds. */
  empty: StampedeCost
  full: StampedeCost
  /** full / empty of the medians: 1.0 is the same speed. */
  reqPerSecRatio: number
  pgCpuPerRowRatio: number
}

/**
 * Has the service's pool open its connections before a run is measured: a second of concurrent
 * checkouts (of items 1..100, so at most 100 of the sale's items are taken) keeps its batch writer's
 * slots busy. Otherwise the pool opens them during the run, and each backend's start-up (fork,
 * catalog caches: a few ms of CPU) lands in the run's CPU, a share that grows as the host's load
 * shrinks the run's rows.
 */
async function openPool (url: string): Promise<void> {
  const until = Date.now() + 1000
  await Promise.all(Array.from({ length: 200 }, async () => {
    while (Date.now() < until) {
      const user = Math.floor(Math.random() * 1_000_000)
      await (await fetch(`${url}/checkout?user_id=warm${user}&id=${1 + user % 100}`, { method: 'POST' })).arrayBuffer()
    }
  }))
}

/** Batches the service's attempt writer committed so far (its flush histogram's count). */
async function attemptStatements (url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text()
  return Number(/batch_flush_duration_seconds_count\{writer="checkout_attempts"\} (\d+)/.exec(text)?.[1] ?? 0)
}

function medianCost (runs: StampedeCost[]): StampedeCost {
  const of = (key: keyof StampedeCost) => Math.round(median(runs.map((r) => r[key])) * 10) / 10
  return {
    reqPerSec: of('reqPerSec'),
    checkoutsSent: of('checkoutsSent'),
    committedRows: of('committedRows'),
    rowsPerStatement: of('rowsPerStatement'),
    pgCpuMs: of('pgCpuMs'),
    pgCpuUsPerRow: of('pgCpuUsPerRow'),
    backendsOpened: of('backendsOpened'),
    load: of('load')
  }
}

/**
 * The stampede on an empty schema and on one prefilled with `attempts` rows over the past `days`
 * (same service, same load), `rounds` times, alternating which goes first (empty, full, full,
 * empty, ...), each right after a CHECKPOINT. The history is filled once: between its runs the
 * prefilled schema gets a fresh partition for today (what the previous run wrote goes) and is
 * renamed to the next run's schema. Each run reports req/s, committed rows, rows per statement and
 * the CPU its Postgres backends spent per committed row; the schemas are dropped afterwards.
 */
export async function compareWithHistory (stampede: Stampede, admin: pg.Client, options: { attempts: number, days: number, rounds: number, log: (m: string) => void }): Promise<HistoryComparison> {
  const postgresPort = admin.port
  let prefill: HistoryFilled | undefined
  let historySchema: string | undefined
  const measure: StampedeHooks['measure'] = async (service) => {
    const pid = service.child.pid as number
    await openPool(service.url)
    const from = Date.now()
    const load = loadavg()[0] as number
    const before = await backendCpu(admin, pid, postgresPort)
    const batchesBefore = await attemptStatements(service.url)
    const statementsBefore = await statementTotals(admin)
    return async () => {
      const after = await backendCpu(admin, pid, postgresPort)
      const cpuMs = cpuBetween(before, after)
      for (const line of statementsBetween(statementsBefore, await statementTotals(admin), 2)) options.log(line)
      // The service may still be flushing its last batch: rows are counted after it stops, below.
      return {
        pgCpuMs: Math.round(cpuMs),
        since: from,
        load,
        statements: await attemptStatements(service.url) - batchesBefore,
        backendsOpened: [...after.keys()].filter((backend) => !before.has(backend)).length
      }
    }
  }
  const committedSince = async (schema: string, since: number) => Number((await admin.query<{ n: string }>(
    `SELECT count(*) AS n FROM ${schema}.checkout_attempts WHERE attempted_at >= to_timestamp($1::float8 / 1000)`, [since])).rows[0]?.n)
  const once = async (name: string, history: boolean, last: boolean): Promise<StampedeCost & { history: boolean }> => {
    const { row, expect } = await stampede(name, { prepare: history ? withHistory : checkpoint, measure })
    const rows = await committedSince(expect.service.schema, Number(row.extra?.since))
    if (history && !last) historySchema = expect.service.schema
    else await admin.query(`DROP SCHEMA ${expect.service.schema} CASCADE`)
    const pgCpuMs = Number(row.extra?.pgCpuMs)
    return {
      history,
      reqPerSec: row.reqPerSec,
      checkoutsSent: expect.checkoutsSent,
      committedRows: rows,
      rowsPerStatement: Math.round(rows / Math.max(Number(row.extra?.statements), 1) * 10) / 10,
      pgCpuMs,
      pgCpuUsPerRow: Math.round(pgCpuMs * 1000 / Math.max(rows, 1) * 10) / 10,
      backendsOpened: Number(row.extra?.backendsOpened),
      load: Math.round(Number(row.extra?.load) * 100) / 100
    }
  }
  // Each run starts right after a checkpoint, so neither pays more full-page WAL images than the
  // other for the checkpoint the prefill's gigabytes of WAL would otherwise set off under it.
  const checkpoint = async () => { await admin.query('CHECKPOINT') }
  const withHistory = async (schema: string) => {
    if (historySchema === undefined) {
      await admin.query(`CREATE SCHEMA ${schema}`)
      await admin.query(`SET search_path = ${schema}`)
      await migrate(admin, schema, () => {})
      options.log(`\n▶ prefilling ${options.attempts.toLocaleString('en-US')} checkout attempts over ${options.days} days into ${schema}`)
      prefill = await prefillHistory(admin, { attempts: options.attempts, days: options.days, purchasesPerSale: 1000, now: Date.now(), log: options.log })
    } else {
      await admin.query(`ALTER SCHEMA ${historySchema} RENAME TO ${schema}`)
      await admin.query(`SET search_path = ${schema}`)
      await forgetToday(admin)
    }
    await admin.query('SET search_path = public')
    await checkpoint()
  }
  const runs: Array<StampedeCost & { history: boolean }> = []
  for (let round = 1; round <= options.rounds; round++) {
    const last = round === options.rounds
    for (const history of round % 2 === 1 ? [false, true] : [true, false]) {
      runs.push(await once(`stampede_${history ? 'history' : 'empty'}${options.rounds > 1 ? `_${round}` : ''}`, history, last))
    }
  }
  const empty = medianCost(runs.filter((r) => !r.history))
  const full = medianCost(runs.filter((r) => r.history))
  return {
    prefill: prefill as HistoryFilled,
    rounds: options.rounds,
    runs,
    empty,
    full,
    reqPerSecRatio: Math.round(full.reqPerSec / empty.reqPerSec * 1000) / 1000,
    pgCpuPerRowRatio: Math.round(full.pgCpuUsPerRow / empty.pgCpuUsPerRow * 1000) / 1000
  }
}

/**
 * Takes back what a stampede wrote into a prefilled schema (search_path), so the next run meets it
 * as the first did: today's sales go (with their catalogs) and today's partitions are replaced by
 * empty ones; the history of the past days stays.
 */
async function forgetToday (client: pg.ClientBase): Promise<void> {
  const today = new Date().toISOString().slice(0, 10)
  const suffix = today.replace(/-/g, '')
  await client.query(`DROP TABLE purchases_p${suffix}`)
  await client.query(`ALTER TABLE checkout_attempts DETACH PARTITION checkout_attempts_p${suffix}`)
  await client.query(`DROP TABLE checkout_attempts_p${suffix}`)
  await client.query('DELETE FROM sales WHERE starts_at >= $1::timestamptz', [`${today}T00:00:00Z`])
  await client.query('SELECT flash_sale_add_day_partitions($1::date, $1::date)', [today])
}
