import assert from 'node:assert/strict'
import { appendFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { newAttemptId } from '../../src/lib/attempt-id.js'
import { AttemptSpool, SpoolFull } from '../../src/db/attempt-spool.js'
import { canSwitchUser, dedicatedPostgres, kill, query, startService, waitFor } from '../support/fault-kit.js'
import { buildApp } from '../../src/app.js'
import { checkout, isolatedConfig, sql } from '../support/helpers.js'

function tempDir (t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'flash-spool-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

const collect = async (spool: AttemptSpool<{ n: number }>) => {
  const seen: number[] = []
  await spool.replay(async (records) => { seen.push(...records.map((r) => r.n)) })
  return seen.sort((a, b) => a - b)
}

test('the spool gives back every record appended, once replayed they are gone, and a failed replay keeps them', async (t) => {
  const dir = tempDir(t)
  const spool = await AttemptSpool.open<{ n: number }>({ dir, maxBytes: 1 << 20 })
  t.after(() => spool.close())
  await Promise.all(Array.from({ length: 200 }, (_, n) => spool.append({ n })))
  assert.ok(spool.bytes > 0)

  await assert.rejects(spool.replay(async () => { throw new Error('Postgres is away') }), /Postgres is away/)
  assert.ok(spool.bytes > 0, 'nothing was lost by the failed replay')
  await spool.append({ n: 200 })
  assert.deepEqual(await collect(spool), Array.from({ length: 201 }, (_, n) => n))
  assert.equal(spool.bytes, 0)
  assert.deepEqual(await collect(spool), [], 'a replayed record is not replayed again')
})

test('the spool is bounded: past SPOOL_MAX_BYTES it refuses, says so once, and has room again after a replay', async (t) => {
  const dir = tempDir(t)
  const events: Array<boolean | string> = []
  const spool = await AttemptSpool.open<{ n: number }>({
    dir, maxBytes: 100, onFullChange: (full) => events.push(full), onRecords: (event, n) => events.push(`${event}:${n}`)
  })
  t.after(() => spool.close())
  for (let n = 0; n < 10; n++) await spool.append({ n }) // 8 bytes each: 80
  await assert.rejects(spool.append({ n: 1000000000000000 }), SpoolFull)
  await assert.rejects(spool.append({ n: 1000000000000001 }), SpoolFull)
  assert.ok(spool.bytes <= 100)
  assert.equal((await collect(spool)).length, 10)
  await spool.append({ n: 9 })
  assert.deepEqual(events.filter((e) => typeof e === 'boolean'), [true, false], 'one log when full, one when it has room')
  assert.deepEqual(events.filter((e) => typeof e === 'string' && e.startsWith('dropped')), ['dropped:1', 'dropped:1'])
})

test('segments of a dead writer are claimed and replayed once; a live writer\'s are left alone; a torn last line is quarantined', async (t) => {
  const dir = tempDir(t)
  // pid 2^22 + 1 is above Linux's pid_max: that writer is certainly dead.
  writeFileSync(join(dir, '4194305-aaaaaaaaaaaa-0000000000000001.jsonl'), '{"n":1}\n{"n":2}\n{"n":')
  // A live process's segment (pid 1 is always alive) stays where it is.
  writeFileSync(join(dir, '1-bbbbbbbbbbbb-0000000000000001.jsonl'), '{"n":99}\n')
  const [a, b] = await Promise.all([
    AttemptSpool.open<{ n: number }>({ dir, maxBytes: 1 << 20 }),
    AttemptSpool.open<{ n: number }>({ dir, maxBytes: 1 << 20 })
  ])
  t.after(() => Promise.all([a.close(), b.close()]))
  assert.ok(a.bytes > 0, 'the dead writer\'s records count against the bound')
  const [fromA, fromB] = await Promise.all([collect(a), collect(b)])
  assert.deepEqual([...fromA, ...fromB].sort(), [1, 2], 'claimed by exactly one of the two')
  assert.deepEqual(readdirSync(dir).sort(), ['1-bbbbbbbbbbbb-0000000000000001.jsonl', 'quarantine-4194305-aaaaaaaaaaaa-0000000000000001.jsonl'])

  // An instance that closed with records left (Postgres away) is a dead writer for the next one.
  await a.append({ n: 3 })
  await a.close()
  appendFileSync(join(dir, 'unrelated.txt'), 'ignored')
  assert.deepEqual(await collect(b), [3])
})

test('Postgres stopped under load: every checkout request read is a row once it is back, the 503s at their original time', { skip: !canSwitchUser && 'needs root to run a dedicated Postgres' }, async (t) => {
  const postgres = dedicatedPostgres(t)
  const config = isolatedConfig(t, {
    DATABASE_URL: postgres.url,
    SALE_ITEMS: 5000,
    USER_LIMIT: 1000,
    PG_CONNECT_TIMEOUT_MS: 500,
    PG_QUERY_TIMEOUT_MS: 500,
    SPOOL_DIR: tempDir(t),
    RATE_LIMIT_PER_USER: 0 // a 429 is the one answer without a row (by design): none here
  })
  // A clock that runs, shifted into a sale of its own: replayed rows must keep their own time.
  const shift = Date.parse('2031-03-04T13:10:00.000Z') - Date.now()
  const app = await buildApp(config, { now: () => Date.now() + shift })
  t.after(() => app.close())
  await app.ready()

  let sent = 0
  const statuses = new Map<number, number>()
  const done = new AbortController()
  const load = Promise.all(Array.from({ length: 20 }, async (_, u) => {
    while (!done.signal.aborted) {
      sent++
      const res = await checkout(app, `user_id=u${u}&id=${1 + Math.floor(Math.random() * 5000)}`)
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
      await sleep(2)
    }
  }))
  await sleep(300)
  const stoppedAt = Date.now()
  postgres.stop()
  await sleep(2000)
  postgres.start()
  const startedAt = Date.now()
  await waitFor('/health to answer 200 after Postgres restarted', async () => (await app.inject('/health')).statusCode === 200, 10_000)
  await sleep(300)
  done.abort()
  await load

  assert.ok((statuses.get(503) ?? 0) > 0, `the outage was seen: ${JSON.stringify([...statuses])}`)
  await waitFor('the spool to be replayed into Postgres (0 bytes left)', async () => app.attemptSpool.bytes === 0, 10_000, () => app.attemptSpool.bytes)
  const [rows] = await sql<{ n: number }>(app, 'SELECT count(*)::int AS n FROM checkout_attempts')
  assert.equal(rows?.n, sent, 'one row per checkout request read')
  const [unavailable] = await sql<{ n: number, first: Date, last: Date }>(app,
    "SELECT count(*)::int AS n, min(attempted_at) AS first, max(attempted_at) AS last FROM checkout_attempts WHERE outcome = 'service_unavailable'")
  assert.equal(unavailable?.n, statuses.get(503), 'each 503 is a service_unavailable row')
  assert.ok(unavailable!.first.getTime() >= stoppedAt + shift - 1000, 'at the time they were answered, not later')
  assert.ok(unavailable!.last.getTime() <= startedAt + shift + 10_000, 'at the time they were answered, not later')
  const metrics = (await app.inject('/metrics')).body
  assert.match(metrics, /^flash_sale_spool_bytes 0$/m)
  assert.match(metrics, /^flash_sale_spool_attempts_total\{event="dropped"\} 0$/m)
})

test('a process killed while Postgres is away loses none of the attempts it answered 503: the next start replays them', { skip: !canSwitchUser && 'needs root to run a dedicated Postgres' }, async (t) => {
  const postgres = dedicatedPostgres(t)
  const config = isolatedConfig(t, { DATABASE_URL: postgres.url, SALE_ITEMS: 100, USER_LIMIT: 100 })
  const env = { SPOOL_DIR: tempDir(t), PG_CONNECT_TIMEOUT_MS: '300', PG_QUERY_TIMEOUT_MS: '300', RATE_LIMIT_PER_USER: '0' }
  const first = await startService(t, config, { env })
  const answered = (id: number) => fetch(`${first.url}/checkout?user_id=alice&id=${id}`, { method: 'POST' }).then((r) => r.status)
  assert.equal(await answered(1), 200)
  postgres.stop()
  const during = await Promise.all(Array.from({ length: 30 }, (_, i) => answered(2 + i)))
  assert.deepEqual(new Set(during), new Set([503]))
  await kill(first.child)

  postgres.start()
  await startService(t, config, { env })
  await waitFor('the restarted service to replay the killed one\'s 30 spooled attempts (31 rows)', async () => (await query<{ n: number }>(config, 'SELECT count(*)::int AS n FROM checkout_attempts'))[0]?.n === 31, 10_000)
  const rows = await query<{ outcome: string, n: number }>(config, 'SELECT outcome, count(*)::int AS n FROM checkout_attempts GROUP BY outcome ORDER BY outcome')
  assert.deepEqual(rows, [{ outcome: 'accepted', n: 1 }, { outcome: 'service_unavailable', n: 30 }])
})

test('a spooled attempt Postgres will never take is dropped alone, not holding the spool back', async (t) => {
  const now = Date.parse('2031-03-04T13:10:00.000Z')
  const app = await buildApp(isolatedConfig(t, { SPOOL_DIR: tempDir(t) }), { now: () => now })
  t.after(() => app.close())
  await app.ready()
  const attempt = { attemptId: newAttemptId(), saleId: null, saleStartsAt: null, userId: 'alice', itemId: 1, outcome: 'item_reserved', code: null, expiresAt: null, attemptedAt: now }
  await app.attemptSpool.append({ ...attempt, attemptId: newAttemptId(), saleId: 987654 }) // no such sale: a foreign key violation
  await app.attemptSpool.append(attempt)
  await waitFor('the spool to be replayed into Postgres (0 bytes left)', async () => app.attemptSpool.bytes === 0, 5000, () => app.attemptSpool.bytes)
  const rows = await sql<{ attempt_id: string, outcome: string }>(app, 'SELECT replace(attempt_id::text, \'-\', \'\') AS attempt_id, outcome FROM checkout_attempts')
  assert.deepEqual(rows, [{ attempt_id: attempt.attemptId, outcome: 'service_unavailable' }])
})
