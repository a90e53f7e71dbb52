import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { AttemptSpool, parseSegment } from '../../src/db/attempt-spool.js'

function tempDir (t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'flash-spool-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

interface N { n: number }
const isN = (value: unknown): value is N => typeof value === 'object' && value !== null && typeof (value as N).n === 'number'

test('a segment\'s lines: records, and the line numbers of what is not one (null, other JSON, torn)', () => {
  const { records, malformed } = parseSegment('{"n":1}\nnull\n{"n":2}\n42\n{"x":1}\n{"n":3}\n{"n":', isN)
  assert.deepEqual(records, [{ n: 1 }, { n: 2 }, { n: 3 }])
  assert.deepEqual(malformed, [2, 4, 5, 7])
  // A whole last record whose newline was cut is a record: it was written whole.
  assert.deepEqual(parseSegment('{"n":1}\n{"n":2}', isN), { records: [{ n: 1 }, { n: 2 }], malformed: [] })
  assert.deepEqual(parseSegment('', isN), { records: [], malformed: [] })
})

test('a null line and a torn last record are quarantined, reported, and cost only themselves; replay goes on to later segments', async (t) => {
  const dir = tempDir(t)
  // A dead writer's segments (pid 2^22 + 1 is above Linux's pid_max): the first holds `null` and
  // ends in a record its killed writer tore; the second sorts after it.
  const first = '4194305-aaaaaaaaaaaa-0000000000000001.jsonl'
  writeFileSync(join(dir, first), '{"n":1}\nnull\n{"n":2}\n{"n":3}\n{"n":')
  writeFileSync(join(dir, '4194305-aaaaaaaaaaaa-0000000000000002.jsonl'), '{"n":4}\n')
  const reports: Array<{ file: string, lines: number[], replayed: number }> = []
  const events: string[] = []
  const spool = await AttemptSpool.open<N>({
    dir, maxBytes: 1 << 20, isRecord: isN, onQuarantine: (info) => reports.push(info), onRecords: (event, n) => events.push(`${event}:${n}`)
  })
  t.after(() => spool.close())

  const seen: number[] = []
  let calls = 0
  const apply = async (records: N[]) => { calls++; seen.push(...records.map((r) => r.n)) }
  assert.equal(await spool.replay(apply), 4)
  assert.deepEqual(seen, [1, 2, 3, 4], 'every whole record, the one before the torn one and the later segment included')
  assert.deepEqual(reports, [{ file: join(dir, `quarantine-${first}`), lines: [2, 5], replayed: 3 }])
  assert.ok(events.includes('quarantined:2'))
  assert.equal(spool.stats.quarantined, 2)
  assert.deepEqual(readdirSync(dir), [`quarantine-${first}`], 'the segment moved aside whole; the clean one deleted')
  assert.equal(readFileSync(join(dir, `quarantine-${first}`), 'utf8'), '{"n":1}\nnull\n{"n":2}\n{"n":3}\n{"n":')
  assert.equal(spool.bytes, 0, 'a quarantined segment does not count against the bound')

  calls = 0
  assert.equal(await spool.replay(apply), 0)
  assert.equal(calls, 0, 'a quarantined segment is never replayed again')
})

test('a segment whose replay fails is kept whole (not quarantined yet): the next replay moves it aside after its records', async (t) => {
  const dir = tempDir(t)
  const name = '4194305-aaaaaaaaaaaa-0000000000000001.jsonl'
  writeFileSync(join(dir, name), '{"n":1}\nnull\n')
  const spool = await AttemptSpool.open<N>({ dir, maxBytes: 1 << 20, isRecord: isN })
  t.after(() => spool.close())
  await assert.rejects(spool.replay(async () => { throw new Error('Postgres is away') }), /Postgres is away/)
  assert.equal(readdirSync(dir).filter((f) => f.startsWith('quarantine-')).length, 0)
  assert.ok(spool.bytes > 0)
  const seen: number[] = []
  await spool.replay(async (records) => { seen.push(...records.map((r) => r.n)) })
  assert.deepEqual(seen, [1])
  assert.equal(readdirSync(dir).filter((f) => f.startsWith('quarantine-')).length, 1)
})
