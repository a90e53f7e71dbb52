import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import type { Config } from '../../src/config.js'
import { buildTestApp, checkout, isolatedConfig, purchase, sql, TestClock } from '../support/helpers.js'

const run = promisify(execFile)

/** The operator's commands, run as `npm run` runs them, against this test's schema. */
const cli = (script: string, config: Config, ...args: string[]) =>
  run(process.execPath, ['--import', 'tsx', `src/cli/${script}.ts`, ...args], {
    env: { ...process.env, DATABASE_URL: config.DATABASE_URL, DATABASE_SCHEMA: config.DATABASE_SCHEMA }
  })

test('npm run migrate creates the tables; npm run sale:status reports the sale from Postgres', async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: 20, USER_LIMIT: 3 })
  const { stdout } = await cli('migrate', config)
  assert.match(stdout, /1764000000000_init/)
  assert.match((await cli('migrate', config)).stdout, /No migrations to run/, 'a second run is a no-op')

  const clock = new TestClock(Date.now())
  const app = await buildTestApp(t, config, clock)
  const bought = (await checkout(app, 'user_id=alice&id=1')).json().code
  assert.equal((await purchase(app, bought)).statusCode, 200)
  assert.equal((await checkout(app, 'user_id=bob&id=2')).statusCode, 200)
  assert.equal((await checkout(app, 'user_id=carol&id=1')).statusCode, 409)

  const { sales, generated_at: generatedAt } = JSON.parse((await cli('flash-sale', config, 'status', '--json')).stdout) as { sales: Array<{ state: string, id: number, opens_at: string, closes_at: string }>, generated_at: string }
  // The open sale, and at most the next one, prepared ahead in the last SALE_PREPARE_SECONDS of the hour.
  const report = sales.find((sale) => sale.state === 'open')
  const older = sales.filter((sale) => sale !== report && sale.state !== 'upcoming')
  assert.ok(report !== undefined)
  const [{ price } = { price: NaN }] = await sql<{ price: number }>(app, 'SELECT price_cents AS price FROM items WHERE id = 1')
  assert.deepEqual(older, [], 'one sale so far')
  assert.ok(Math.abs(Date.parse(generatedAt) - Date.now()) < 60_000)
  assert.deepEqual({ ...report, id: undefined, opens_at: undefined, closes_at: undefined }, {
    id: undefined,
    state: 'open',
    opens_at: undefined,
    closes_at: undefined,
    items: 20,
    sold: 1,
    held: 1,
    left: 18,
    unredeemed_codes: 0,
    buyers: 1,
    user_limit: 3,
    revenue: price / 100,
    checkout_attempts: { total: 3, by_outcome: { accepted: 2, item_sold: 1 } }
  })
  assert.equal(Date.parse(report.closes_at) - Date.parse(report.opens_at), 3_600_000)
  assert.match(report.opens_at, /^\d{4}-\d\d-\d\dT\d\d:00:00\.000Z$/)
  const text = (await cli('flash-sale', config, 'status')).stdout
  assert.match(text, new RegExp(`sale ${report.id}: .* \\(open, \\d+ min left\\)`))
  assert.match(text, /items 20 {3}sold 1 {3}held 1 {3}left 18/)

  // A bad command line is a usage message on stderr and exit code 2, never a half report on stdout.
  await assert.rejects(cli('flash-sale', config, 'status', '--sales', '0'),
    (error: { code: number, stdout: string, stderr: string }) => error.code === 2 && error.stdout === '' && /usage: flash-sale status/.test(error.stderr))
  // An unknown flag is named in the command's own words, not Node's parser's.
  await assert.rejects(cli('flash-sale', config, 'status', '--bogus'),
    (error: { code: number, stderr: string }) => error.code === 2 && error.stderr === 'unknown option: --bogus\nusage: flash-sale status [--json] [--sales N]    (N: 1-100, default 5)\n')
})

test('a bad variable stops the operator commands with a message naming it', async () => {
  await assert.rejects(
    run(process.execPath, ['--import', 'tsx', 'src/cli/flash-sale.ts', 'status'], { env: { ...process.env, DATABASE_URL: 'mysql://x' } }),
    (error: { stderr: string, code: number }) => error.code === 1 && /Invalid configuration: env\/DATABASE_URL/.test(error.stderr))
  // A valid URL nothing answers at: the variable and its target, the password hidden.
  await assert.rejects(
    run(process.execPath, ['--import', 'tsx', 'src/cli/flash-sale.ts', 'status'], { env: { ...process.env, DATABASE_URL: 'postgres://postgres:secret@127.0.0.1:1/postgres' } }),
    (error: { stderr: string, code: number }) => error.code === 1 &&
      error.stderr === 'DATABASE_URL (postgres://postgres:***@127.0.0.1:1/postgres) is not usable: connect ECONNREFUSED 127.0.0.1:1\n')
})

/** `CMD [...]` / `HEALTHCHECK ... CMD [...]` of the Dockerfile, as exec-form argument lists. */
function dockerfileCommands () {
  const dockerfile = readFileSync('Dockerfile', 'utf8').replaceAll('\\\n', ' ')
  const exec = (pattern: RegExp) => JSON.parse(dockerfile.match(pattern)?.[1] ?? 'null') as string[]
  const env = Object.fromEntries([...dockerfile.matchAll(/(\w+)=(\S+)/g)].filter(([, k]) => /^[A-Z_]+$/.test(k as string)).map(([, k, v]) => [k, v]))
  return { cmd: exec(/^CMD (\[.*\])$/m), healthcheck: exec(/^HEALTHCHECK .*? CMD (\[.*\])$/m), env }
}

test("the image's start command and HEALTHCHECK work as written, outside Docker", async (t) => {
  const { cmd, healthcheck, env } = dockerfileCommands()
  // The image runs the service as `npm start` does, Node flags included (its build is the image's build stage).
  const { scripts } = JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: { start: string } }
  assert.deepEqual(cmd, scripts.start.split(' '))
  assert.equal(env.NODE_ENV, 'production')
  await run('npm', ['run', 'build'])

  const config = isolatedConfig(t)
  const port = String(30000 + Math.floor(Math.random() * 10000))
  const containerEnv = { ...process.env, ...env, PORT: port, HOST: '127.0.0.1', LOG_LEVEL: 'warn', DATABASE_SCHEMA: config.DATABASE_SCHEMA, REDIS_KEY_PREFIX: config.REDIS_KEY_PREFIX, SPOOL_DIR: config.SPOOL_DIR }
  const child = spawn(cmd[0] as string, cmd.slice(1), { env: { ...containerEnv, LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'inherit'] })
  let logs = ''
  child.stdout.on('data', (chunk: Buffer) => { logs += chunk.toString() })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  t.after(() => { child.kill('SIGKILL') })

  const healthy = () => run(healthcheck[0] as string, healthcheck.slice(1), { env: containerEnv }).then(() => true, () => false)
  let ok = false
  for (let i = 0; i < 100 && !ok && child.exitCode === null; i++) ok = await healthy() || (await sleep(100), false)
  assert.ok(ok, 'the HEALTHCHECK command passes against the started image command')
  const res = await fetch(`http://127.0.0.1:${port}/checkout?user_id=docker&id=1`, { method: 'POST' })
  assert.equal(res.status, 200, 'the compiled service sells (Lua scripts and migrations are in dist/)')

  // The start-up line says where to go (stdout is not a terminal here: it is an info log line).
  const started = logs.split('\n').filter(Boolean).map((line) => JSON.parse(line) as { msg: string }).find((line) => / listening on /.test(line.msg))
  const base = `http://127.0.0.1:${port}`
  assert.match(started?.msg ?? '', /^flash-sale \S+ listening on /)
  assert.ok(started?.msg.includes(`listening on ${base}: API docs ${base}/docs, sale page ${base}/sale, metrics ${base}/metrics; sale `), started?.msg)
  assert.match(started?.msg ?? '', /; sale \d+ open until \d\d:00 UTC: 10,000 items, 0 sold, 0 held, 10,000 left; using Postgres (at )?\S+, Redis (at )?\S+$/)

  // The package's bin, as an operator runs it from the built tree: its stdout is one JSON document.
  const { stdout: json } = await run('sh', ['-c', 'npx --no-install flash-sale status --json | node -e "process.stdout.write(JSON.stringify(JSON.parse(require(\'fs\').readFileSync(0, \'utf8\')).sales.find((sale) => sale.state === \'open\')))"'],
    { env: containerEnv })
  assert.deepEqual({ ...JSON.parse(json), opens_at: undefined, closes_at: undefined, id: undefined, revenue: undefined },
    { id: undefined, state: 'open', opens_at: undefined, closes_at: undefined, items: 10000, sold: 0, held: 1, left: 9999, unredeemed_codes: 0, buyers: 0, user_limit: 10, revenue: undefined, checkout_attempts: { total: 1, by_outcome: { accepted: 1 } } })

  child.kill('SIGTERM')
  assert.equal(await exited, 0, 'SIGTERM (docker stop) exits cleanly')
  assert.equal(await healthy(), false, 'and the HEALTHCHECK fails once it is gone')
})
