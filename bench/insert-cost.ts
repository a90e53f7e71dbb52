/**
 * `npx tsx bench/insert-cost.ts`: what one checkout attempt row costs Postgres (CPU of the one
 * backend doing the inserts, from /proc) and the client, per way of writing a batch: `unnest` of
 * one array per column (what src/sale/record-writers.ts does), a multi-row VALUES list, and one INSERT per row
 * in a transaction. Runs against the local Postgres in a scratch schema it drops afterwards.
 */
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { loadConfig } from '../src/config.js'
import { ownCpuUs } from './cpu.js'

const ROWS = 20_000
const BATCH_SIZES = [10, 100]
const schema = `insert_cost_${randomBytes(3).toString('hex')}`

interface Attempt { saleId: number, userId: string, itemId: number, outcome: string, code: string | null, expiresAt: number | null, attemptedAt: number }

const attempts = (n: number): Attempt[] => Array.from({ length: n }, (_, i) => {
  const accepted = i % 5 === 0
  return {
    saleId: 1,
    userId: `u${Math.floor(Math.random() * 1_000_000)}`,
    itemId: 1 + (i % 10_000),
    outcome: accepted ? 'accepted' : 'item_reserved',
    code: accepted ? randomBytes(16).toString('base64url') : null,
    expiresAt: accepted ? Date.now() + 600_000 : null,
    attemptedAt: Date.now()
  }
})

type Writer = (client: pg.Client, rows: Attempt[]) => Promise<unknown>

const COLUMNS = 'sale_id, user_id, item_id, outcome, code, expires_at, attempted_at'

const writers: Record<string, Writer> = {
  unnest: (client, rows) => client.query(
    `INSERT INTO attempts (${COLUMNS})
     SELECT sale_id, user_id, item_id, outcome, code, to_timestamp(expires_ms / 1000), to_timestamp(attempted_ms / 1000)
     FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $6::float8[], $7::float8[])
       AS r (sale_id, user_id, item_id, outcome, code, expires_ms, attempted_ms)`,
    [rows.map((r) => r.saleId), rows.map((r) => r.userId), rows.map((r) => r.itemId), rows.map((r) => r.outcome),
      rows.map((r) => r.code), rows.map((r) => r.expiresAt), rows.map((r) => r.attemptedAt)]),
  'multi-row VALUES': (client, rows) => {
    const params: unknown[] = []
    const tuples = rows.map((r) => {
      const at = params.push(r.saleId, r.userId, r.itemId, r.outcome, r.code, r.expiresAt, r.attemptedAt) - 7
      return `($${at + 1}, $${at + 2}, $${at + 3}, $${at + 4}, $${at + 5}, to_timestamp($${at + 6}::float8 / 1000), to_timestamp($${at + 7}::float8 / 1000))`
    })
    return client.query(`INSERT INTO attempts (${COLUMNS}) VALUES ${tuples.join(', ')}`, params)
  },
  'one INSERT per row': async (client, rows) => {
    await client.query('BEGIN')
    for (const r of rows) {
      await client.query({
        name: 'insert-one-attempt',
        text: `INSERT INTO attempts (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, to_timestamp($6::float8 / 1000), to_timestamp($7::float8 / 1000))`,
        values: [r.saleId, r.userId, r.itemId, r.outcome, r.code, r.expiresAt, r.attemptedAt]
      })
    }
    await client.query('COMMIT')
  }
}

const config = loadConfig()
const client = new pg.Client({ connectionString: config.DATABASE_URL })
await client.connect()
try {
  const backend = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid as number
  await client.query(`CREATE SCHEMA ${schema}; SET search_path TO ${schema}`)
  await client.query(`CREATE TABLE attempts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, sale_id bigint, user_id text, item_id integer,
    outcome text NOT NULL, code text UNIQUE, expires_at timestamptz, attempted_at timestamptz NOT NULL)`)
  console.log('| writer | rows per batch | Postgres backend µs/row | client µs/row |')
  console.log('|---|---:|---:|---:|')
  for (const batch of BATCH_SIZES) {
    for (const [name, write] of Object.entries(writers)) {
      const rows = attempts(ROWS)
      await client.query('TRUNCATE attempts')
      const pgBefore = ownCpuUs(backend)
      const clientBefore = process.cpuUsage()
      for (let i = 0; i < rows.length; i += batch) await write(client, rows.slice(i, i + batch))
      const used = process.cpuUsage(clientBefore)
      const pgUs = (ownCpuUs(backend) - pgBefore) / ROWS
      console.log(`| ${name} | ${batch} | ${pgUs.toFixed(1)} | ${((used.user + used.system) / ROWS).toFixed(1)} |`)
    }
  }
} finally {
  await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {})
  await client.end()
}
