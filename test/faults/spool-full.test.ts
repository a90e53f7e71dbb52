import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildApp } from '../../src/app.js'
import { AttemptSpool } from '../../src/db/attempt-spool.js'
import { newAttemptId } from '../../src/lib/attempt-id.js'
import type { CheckoutAttempt } from '../../src/sale/record-writers.js'
import { canSwitchUser, dedicatedPostgres, query, waitFor } from '../support/fault-kit.js'
import { checkout, isolatedConfig, sql } from '../support/helpers.js'

/**
 * A tmpfs of `size` mounted on a fresh directory, unmounted (and removed) when the test ends; null
 * when mounting is not permitted here (not root, or no CAP_SYS_ADMIN in this container).
 */
function tinyTmpfs (t: TestContext, size: string): string | null {
  const dir = mkdtempSync(join(tmpdir(), 'flash-tmpfs-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' })
  } catch {
    rmdirSync(dir)
    return null
  }
  t.after(() => {
    try { execFileSync('umount', [dir], { stdio: 'ignore' }) } catch { execFileSync('umount', ['-l', dir], { stdio: 'ignore' }) }
    rmdirSync(dir)
  })
  return dir
}

const MOUNT_REFUSED = 'mount -t tmpfs is not permitted here (needs root with CAP_SYS_ADMIN)'

/** Log lines as objects, from buildApp's logStream. */
function logLines (): { lines: Array<Record<string, unknown>>, stream: { write (line: string): void } } {
  const lines: Array<Record<string, unknown>> = []
  return { lines, stream: { write: (line) => { lines.push(JSON.parse(line) as Record<string, unknown>) } } }
}

const metric = (body: string, series: string): number => Number(new RegExp(`^${series.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(body)?.[1])

test('a spool on a full disk keeps every record it acknowledged, drops the rest exactly, and never leaves a torn record behind', async (t) => {
  const dir = tinyTmpfs(t, '48k')
  if (dir === null) return t.skip(MOUNT_REFUSED)
  const counted = { spooled: 0, dropped: 0, replayed: 0, quarantined: 0 }
  const spool = await AttemptSpool.open<{ n: number, pad: string }>({
    dir, maxBytes: 1 << 30, onRecords: (event, n) => { counted[event] += n }
  })
  t.after(() => spool.close())
  // ~60 KiB in groups of concurrent appends (one write each): the disk fills in the middle of a write.
  const pad = 'x'.repeat(180)
  const results: Array<{ n: number, ok: boolean }> = []
  for (let round = 0; round < 6; round++) {
    await Promise.all(Array.from({ length: 50 }, (_, i) => {
      const n = round * 50 + i
      return spool.append({ n, pad }).then(() => results.push({ n, ok: true }), () => results.push({ n, ok: false }))
    }))
  }
  const acknowledged = results.filter((r) => r.ok).map((r) => r.n).sort((a, b) => a - b)
  assert.ok(acknowledged.length > 0 && acknowledged.length < 300, `the disk filled up: ${acknowledged.length} of 300 written`)
  assert.equal(counted.spooled, acknowledged.length, 'spooled counts the records on disk, not a short write\'s')
  assert.equal(counted.dropped, 300 - acknowledged.length, 'every refused record is counted as dropped')

  const replayed: number[] = []
  await spool.replay(async (records) => { replayed.push(...records.map((r) => r.n)) })
  assert.deepEqual(replayed.sort((a, b) => a - b), acknowledged, 'exactly the acknowledged records come back')
  assert.equal(counted.quarantined, 0, 'no torn record was left in a segment')
})

test('a spool on a full tmpfs while Postgres is stopped: the dropped count, /health and a log line say exactly how many 503s have no row', { skip: !canSwitchUser && 'needs root to run a dedicated Postgres and mount a tmpfs' }, async (t) => {
  // 16 KiB (the run used 48 KiB): the disk fills within the first hundred 503s, however slow the machine.
  const spoolDir = tinyTmpfs(t, '16k')
  if (spoolDir === null) return t.skip(MOUNT_REFUSED)
  const postgres = dedicatedPostgres(t)
  const config = isolatedConfig(t, {
    DATABASE_URL: postgres.url,
    SALE_ITEMS: 5000,
    USER_LIMIT: 1000,
    PG_CONNECT_TIMEOUT_MS: 500,
    PG_QUERY_TIMEOUT_MS: 500,
    SPOOL_DIR: spoolDir,
    LOG_LEVEL: 'warn',
    RATE_LIMIT_PER_USER: 0 // a 429 is the one answer without a row (by design): none here
  })
  const log = logLines()
  const shift = Date.parse('2031-03-04T13:10:00.000Z') - Date.now()
  const app = await buildApp(config, { now: () => Date.now() + shift, logStream: log.stream })
  t.after(() => app.close())
  await app.ready()

  let sent = 0
  const statuses = new Map<number, number>()
  const burst = async (ms: number) => {
    const until = Date.now() + ms
    await Promise.all(Array.from({ length: 20 }, async (_, u) => {
      while (Date.now() < until) {
        sent++
        const res = await checkout(app, `user_id=u${u}&id=${1 + Math.floor(Math.random() * 5000)}`)
        statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
      }
    }))
  }
  await burst(300)
  assert.ok((statuses.get(200) ?? 0) > 0, 'checkouts were accepted before the outage')
  // Between bursts, so that no batch is in flight when Postgres goes (such a batch may commit and
  // still be answered 503: counted unrecorded, it would have a row after all).
  await sleep(200)
  postgres.stop()
  await burst(2000)
  const during = await app.inject('/health')
  postgres.start()
  await waitFor('/health to answer 200 after Postgres restarted', async () => (await app.inject('/health')).statusCode === 200, 10_000)
  await waitFor('the spool to be replayed into Postgres (0 bytes left)', async () => app.attemptSpool.bytes === 0, 10_000, () => app.attemptSpool.bytes)
  const metrics = (await app.inject('/metrics')).body
  const after = (await app.inject('/health')).json()
  await app.close() // flushes the last log summary

  const [rows] = await query<{ n: number }>(config, 'SELECT count(*)::int AS n FROM checkout_attempts')
  const unrecorded = sent - (rows?.n ?? 0)
  t.diagnostic(`sent ${sent}, statuses ${JSON.stringify(Object.fromEntries(statuses))}, rows ${rows?.n}, unrecorded ${unrecorded}`)
  assert.ok(unrecorded > 0, 'the tmpfs filled up: some 503s could not be spooled')
  assert.ok(unrecorded <= (statuses.get(503) ?? 0), 'only 503s go unrecorded')

  assert.equal(metric(metrics, 'flash_sale_spool_attempts_total{event="dropped"}'), unrecorded, 'the dropped count is exactly the 503s without a row')
  assert.equal(during.json().spool?.ok, false, `/health said the spool was failing: ${during.body}`)
  assert.equal(after.spool.dropped, unrecorded, '/health counts them too')
  const said = log.lines.filter((l) => typeof l.unrecorded === 'number')
  assert.ok(said.length > 0, `a log line says attempts went unrecorded: ${JSON.stringify(log.lines.slice(0, 5))}`)
  assert.equal(said.reduce((n, l) => n + (l.unrecorded as number), 0), unrecorded, 'the log lines add up to exactly the unrecorded attempts')
  assert.equal(said.at(-1)?.unrecordedTotal, unrecorded)
})

test('a spool line holding null and a torn last record are quarantined, logged, and everything else is replayed', async (t) => {
  const config = isolatedConfig(t, { LOG_LEVEL: 'warn' })
  const dir = join(config.SPOOL_DIR, config.DATABASE_SCHEMA)
  mkdirSync(dir, { recursive: true })
  const now = Date.parse('2031-03-04T13:10:00.000Z')
  const attempt = (userId: string): CheckoutAttempt => ({
    attemptId: newAttemptId(), saleId: null, saleStartsAt: null, userId, itemId: 1, outcome: 'service_unavailable', code: null, expiresAt: null, attemptedAt: now
  })
  const line = (a: CheckoutAttempt) => `${JSON.stringify(a)}\n`
  // Two segments of a dead writer (pid 2^22 + 1 is above Linux's pid_max); the first one holds a
  // `null` line and ends in a record its killed writer tore; the second sorts after it.
  const first = '4194305-aaaaaaaaaaaa-0000000000000001.jsonl'
  const torn = line(attempt('torn')).slice(0, 60)
  writeFileSync(join(dir, first), line(attempt('a1')) + 'null\n' + line(attempt('a2')) + torn)
  writeFileSync(join(dir, '4194305-aaaaaaaaaaaa-0000000000000002.jsonl'), line(attempt('a3')))

  const log = logLines()
  const app = await buildApp(config, { now: () => now, logStream: log.stream })
  t.after(() => app.close())
  await app.ready()
  await waitFor('the spool to be replayed into Postgres (0 bytes left)', async () => app.attemptSpool.bytes === 0, 10_000, () => app.attemptSpool.bytes)

  const users = await sql<{ user_id: string }>(app, 'SELECT user_id FROM checkout_attempts ORDER BY user_id')
  assert.deepEqual(users.map((r) => r.user_id), ['a1', 'a2', 'a3'], 'every readable record was replayed, the later segment too')
  const quarantined = readdirSync(dir).filter((name) => name.startsWith('quarantine'))
  assert.equal(quarantined.length, 1, `one quarantine file: ${readdirSync(dir).join(', ')}`)
  const kept = readFileSync(join(dir, quarantined[0] as string), 'utf8')
  assert.ok(kept.includes('null\n') && kept.includes(torn), 'the malformed lines are kept aside for an operator')
  const said = log.lines.find((l) => l.quarantined === 2)
  assert.ok(said !== undefined, `a log line names the two quarantined lines: ${JSON.stringify(log.lines)}`)
  assert.equal(metric((await app.inject('/metrics')).body, 'flash_sale_spool_attempts_total{event="quarantined"}'), 2)
  assert.equal((await app.inject('/health')).json().spool.quarantined, 2)
})
