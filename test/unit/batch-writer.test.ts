import assert from 'node:assert/strict'
import { test } from 'node:test'
import pg from 'pg'
import { BatchWriter } from '../../src/db/batch-writer.js'
import { ServiceUnavailable } from '../../src/sale/errors.js'
import { loadConfig } from '../../src/config.js'

/** A scratch table on the real Postgres; its CHECK lets a test make one row fail a batch. */
async function scratchTable (t: import('node:test').TestContext) {
  const pool = new pg.Pool({ connectionString: loadConfig().DATABASE_URL, max: 4 })
  const table = `batch_${Math.random().toString(36).slice(2, 10)}`
  await pool.query(`CREATE TABLE ${table} (n int NOT NULL CHECK (n >= 0))`)
  t.after(async () => {
    await pool.query(`DROP TABLE IF EXISTS ${table}`)
    await pool.end()
  })
  const write = async (rows: number[]): Promise<number[]> => {
    await pool.query(`INSERT INTO ${table} (n) SELECT * FROM unnest($1::int[])`, [rows])
    return rows
  }
  const count = async (): Promise<number> => (await pool.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n
  return { write, count }
}

const options = { maxRows: 100, windowMs: 5, maxQueue: 1000, maxInflight: 2 }

test('rows are committed in batches and each caller gets its own result', async (t) => {
  const { write, count } = await scratchTable(t)
  let flushes = 0
  const writer = new BatchWriter<number, number>({ ...options, write, onFlush: () => { flushes++ } })
  const results = await Promise.all(Array.from({ length: 250 }, (_, i) => writer.push(i)))
  assert.deepEqual(results, Array.from({ length: 250 }, (_, i) => i))
  assert.equal(await count(), 250)
  assert.ok(flushes >= 3 && flushes <= 10, `250 rows took ${flushes} statements`)
})

test('a failed batch acknowledges none of its rows and writes none of them', async (t) => {
  const { write, count } = await scratchTable(t)
  const writer = new BatchWriter<number, number>({ ...options, write })
  const outcomes = await Promise.allSettled([1, 2, -1, 4].map((n) => writer.push(n)))
  assert.deepEqual(outcomes.map((o) => o.status), ['rejected', 'rejected', 'rejected', 'rejected'])
  for (const o of outcomes) assert.ok(o.status === 'rejected' && o.reason instanceof ServiceUnavailable)
  assert.equal(await count(), 0, 'nothing half-written')
  assert.equal(await writer.push(5), 5, 'the writer keeps working after a failed batch')
})

test('a full queue answers ServiceUnavailable at once instead of growing', async (t) => {
  const { write, count } = await scratchTable(t)
  let release!: () => void
  const gate = new Promise<void>((resolve) => { release = resolve })
  const slowWrite = async (rows: number[]) => { await gate; return write(rows) }
  const writer = new BatchWriter<number, number>({ maxRows: 10, windowMs: 1, maxQueue: 20, maxInflight: 1, write: slowWrite })

  const accepted = Array.from({ length: 30 }, (_, i) => writer.push(i)) // 10 in flight + 20 queued
  await assert.rejects(writer.push(99), ServiceUnavailable)
  assert.equal(writer.queued, 20)
  release()
  assert.equal((await Promise.all(accepted)).length, 30)
  assert.equal(await count(), 30)
})

test('close() flushes what was accepted, then refuses new rows', async (t) => {
  const { write, count } = await scratchTable(t)
  const writer = new BatchWriter<number, number>({ ...options, windowMs: 1000, write })
  const pending = Array.from({ length: 42 }, (_, i) => writer.push(i))
  await writer.close()
  assert.equal((await Promise.all(pending)).length, 42)
  assert.equal(await count(), 42)
  await assert.rejects(writer.push(1), ServiceUnavailable)
})
