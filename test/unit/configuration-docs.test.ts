import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { test } from 'node:test'
import { ConfigSchema, loadConfig } from '../../src/config.js'

/**
 * docs/configuration.md and .env.example cannot drift from src/config.ts: every variable of the
 * schema is in both, neither names one the schema does not have, and each states the default
 * loadConfig gives (or says "unset" for a variable without one).
 */
const VARIABLES = Object.keys(ConfigSchema.properties).sort()
const DEFAULTS: Record<string, unknown> = loadConfig({}, {})
const read = (path: string) => readFile(new URL(`../../${path}`, import.meta.url), 'utf8')

/** A documented default as loadConfig would return it: undefined for "unset", '' for "empty". */
function expectedDefault (name: string): string | undefined {
  const value = DEFAULTS[name]
  return value === undefined ? undefined : String(value)
}

/**
 * The variable rows of docs/configuration.md: `| \`NAME\` | default | meaning |`, where the default
 * cell is a code span (the value), `empty` or starts with `unset`.
 */
function docRows (markdown: string): Map<string, string | undefined> {
  const rows = new Map<string, string | undefined>()
  for (const [, name, cell] of markdown.matchAll(/^\| `([A-Z][A-Z0-9_]*)` \| ([^|]*) \|/gm)) {
    assert.ok(name !== undefined && cell !== undefined)
    assert.ok(!rows.has(name), `docs/configuration.md lists ${name} once`)
    const trimmed = cell.trim()
    const value = trimmed.startsWith('unset') ? undefined : trimmed === 'empty' ? '' : /^`([^`]*)`/.exec(trimmed)?.[1]
    assert.ok(value !== undefined || trimmed.startsWith('unset'), `docs/configuration.md: the default of ${name} is \`value\`, empty or unset: ${trimmed}`)
    rows.set(name, value)
  }
  return rows
}

/**
 * The variables of .env.example: `NAME=value`; `# NAME=` for one whose default is unset; or
 * `# NAME=default` for one that changes behaviour once set at all (DATABASE_URL, REDIS_URL: set,
 * they are never replaced by a server npm start provides). `commented` lists the last two kinds.
 */
function envExample (text: string): { rows: Map<string, string | undefined>, commented: Set<string> } {
  const rows = new Map<string, string | undefined>()
  const commented = new Set<string>()
  for (const [, hash, name, value] of text.matchAll(/^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$/gm)) {
    assert.ok(name !== undefined && value !== undefined)
    assert.ok(!rows.has(name), `.env.example lists ${name} once`)
    if (hash !== undefined) commented.add(name)
    rows.set(name, hash !== undefined && value === '' ? undefined : value)
  }
  return { rows, commented }
}

function assertMatchesSchema (where: string, rows: Map<string, string | undefined>): void {
  const names = [...rows.keys()].sort()
  assert.deepEqual(names.filter((name) => !VARIABLES.includes(name)), [], `${where} names variables src/config.ts does not have`)
  assert.deepEqual(VARIABLES.filter((name) => !rows.has(name)), [], `${where} is missing variables of src/config.ts`)
  for (const name of VARIABLES) {
    assert.equal(rows.get(name), expectedDefault(name), `${where}: the default of ${name} (undefined = unset)`)
  }
}

test('docs/configuration.md lists every variable of src/config.ts, and only those, with its default', async () => {
  assertMatchesSchema('docs/configuration.md', docRows(await read('docs/configuration.md')))
})

test('.env.example lists every variable of src/config.ts, and only those, with its default', async () => {
  const { rows, commented } = envExample(await read('.env.example'))
  assertMatchesSchema('.env.example', rows)
  // Loaded as the environment, the example changes nothing.
  const env = Object.fromEntries([...rows].filter((row): row is [string, string] => row[1] !== undefined && !commented.has(row[0])))
  assert.deepEqual(loadConfig({}, env), loadConfig({}, {}))
})
