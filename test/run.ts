/**
 * `npm test` and `npm run test:fast`: the tiers given (default: all), concurrently, then the
 * serial phase (`all` only) even when the first failed; exits non-zero if either did. Postgres
 * and Redis that no variable names are provided first, as `npm start` does
 * (src/local-dependencies.ts), so a machine with nothing set up runs the suite too.
 *
 *   tsx test/run.ts                 every tier, then test/serial/
 *   tsx test/run.ts unit api        the fast tier
 */
import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { localDependenciesOrExit } from '../src/local-dependencies.js'

const PARALLEL_TIERS = ['unit', 'api', 'faults', 'load', 'topology', 'browser', 'build']
const tiers = process.argv.slice(2)
const chosen = tiers.length === 0 ? PARALLEL_TIERS : tiers
const unknown = chosen.filter((tier) => !PARALLEL_TIERS.includes(tier))
if (unknown.length > 0) {
  console.error(`unknown test tier ${unknown.join(', ')}; the tiers are ${PARALLEL_TIERS.join(', ')}`)
  process.exit(2)
}

const filesOf = (tier: string): string[] =>
  readdirSync(new URL(`./${tier}/`, import.meta.url)).filter((file) => file.endsWith('.test.ts')).sort().map((file) => `test/${tier}/${file}`)

const local = await localDependenciesOrExit()
const env = { ...process.env, ...local.env }
if (Object.keys(local.env).length > 0) console.error(`tests use ${Object.values(local.described).join(', ')}`)

const nodeTest = (files: string[], concurrency: number): Promise<number> => new Promise((resolve) => {
  const child = spawn(process.execPath, ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-timeout=180000', ...files], { env, stdio: 'inherit' })
  child.once('exit', (code, signal) => resolve(code ?? (signal === null ? 1 : 128)))
})

const parallel = await nodeTest(chosen.flatMap(filesOf), 4)
const serial = tiers.length === 0 ? await nodeTest(filesOf('serial'), 1) : 0
await local.stop()
process.exit(parallel !== 0 ? parallel : serial)
