import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { test, type TestContext } from 'node:test'
import type { Config } from '../../src/config.js'
import { freePort, kill, query, startRedis, waitFor } from '../support/fault-kit.js'
import { isolatedConfig } from '../support/helpers.js'

interface Started { exited: Promise<number | null>, stderr: () => string, port: number }

/** The real server entry (src/server.ts, as `npm start` runs it) with this environment; stderr is kept. */
async function spawnServer (t: TestContext, config: Config, env: Record<string, string>): Promise<Started> {
  const port = Number(env.PORT ?? await freePort())
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    env: {
      ...process.env,
      HOST: '127.0.0.1',
      PORT: String(port),
      LOG_LEVEL: 'error',
      DATABASE_URL: config.DATABASE_URL,
      DATABASE_SCHEMA: config.DATABASE_SCHEMA,
      REDIS_URL: config.REDIS_URL,
      REDIS_KEY_PREFIX: config.REDIS_KEY_PREFIX,
      ...env
    },
    stdio: ['ignore', 'ignore', 'pipe']
  })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.after(() => kill(child))
  return { exited, stderr: () => stderr, port }
}

/** Exit 1 with one line naming the variable and its target per attempt, and no stack trace. */
async function assertNamedFailure (started: Started, variable: string, target: string, cause: RegExp, dependency: 'Postgres' | 'Redis') {
  assert.equal(await started.exited, 1)
  const lines = started.stderr().trim().split('\n')
  assert.ok(!lines.some((line) => /^\s+at /.test(line)), `no stack trace:\n${started.stderr()}`)
  for (const line of lines) {
    assert.ok(line.startsWith(`${variable} (${target}) is not usable: `), `each line names ${variable} and ${target}: ${line}`)
    assert.match(line, cause)
  }
  assert.ok(lines.length >= 2, `it waited and retried before giving up:\n${started.stderr()}`)
  assert.match(lines.at(-2) ?? '', /; retrying in \d+\.\d\d s \(STARTUP_WAIT_SECONDS=1\)$/)
  // A variable that is set is never replaced by an embedded server: the last line says how to get one.
  assert.match(lines.at(-1) ?? '', new RegExp(`; gave up after STARTUP_WAIT_SECONDS=1\\. A variable that is set is used as it is; to get it: ${dependency}: Debian/Ubuntu \`sudo apt-get install `))
}

test('REDIS_URL pointing at nothing: one line naming it per attempt, retried for STARTUP_WAIT_SECONDS, then exit 1', async (t) => {
  const config = isolatedConfig(t)
  const redisPort = await freePort()
  const started = await spawnServer(t, config, { REDIS_URL: `redis://127.0.0.1:${redisPort}`, STARTUP_WAIT_SECONDS: '1' })
  await assertNamedFailure(started, 'REDIS_URL', `redis://127.0.0.1:${redisPort}`, /ECONNREFUSED/, 'Redis')
})

test('DATABASE_URL pointing at nothing, or at a database that does not exist: the same, and the password is not printed', async (t) => {
  const config = isolatedConfig(t)
  const pgPort = await freePort()
  const nothing = await spawnServer(t, config, { DATABASE_URL: `postgres://postgres:secret@127.0.0.1:${pgPort}/postgres`, STARTUP_WAIT_SECONDS: '1' })
  await assertNamedFailure(nothing, 'DATABASE_URL', `postgres://postgres:***@127.0.0.1:${pgPort}/postgres`, /ECONNREFUSED/, 'Postgres')
  assert.ok(!nothing.stderr().includes('secret'))

  const noDatabase = config.DATABASE_URL.replace(/\/[^/]*$/, '/nosuchdb_9b')
  const missing = await spawnServer(t, config, { DATABASE_URL: noDatabase, STARTUP_WAIT_SECONDS: '1' })
  await assertNamedFailure(missing, 'DATABASE_URL', noDatabase, /database "nosuchdb_9b" does not exist/, 'Postgres')
})

test('a port already in use is reported before anything is migrated', async (t) => {
  const config = isolatedConfig(t)
  const squatter = createServer()
  await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve))
  t.after(() => new Promise((resolve) => squatter.close(resolve)))
  const { port } = squatter.address() as { port: number }

  const started = await spawnServer(t, config, { PORT: String(port) })
  assert.equal(await started.exited, 1)
  assert.equal(started.stderr().trim(), `PORT=${port} (HOST=127.0.0.1) is already in use by another process`)
  const schemas = await query(config, 'SELECT 1 FROM information_schema.schemata WHERE schema_name = $1', [config.DATABASE_SCHEMA])
  assert.equal(schemas.length, 0, 'no migration ran: the schema was never created')
})

test('Redis that comes up during STARTUP_WAIT_SECONDS: the service waits, logging each wait, then serves', async (t) => {
  const config = isolatedConfig(t)
  const redisPort = 17000 + Math.floor(Math.random() * 2000)
  const started = await spawnServer(t, config, { REDIS_URL: `redis://127.0.0.1:${redisPort}`, STARTUP_WAIT_SECONDS: '60' })
  // (A tsx-started child takes seconds to reach its first probe on a loaded host: the fault kit allows 40 s.)
  await waitFor('the service to log that it is retrying its dependencies', async () => started.stderr().includes('retrying in'), 40_000)
  const redis = startRedis(redisPort)
  t.after(() => kill(redis))
  await waitFor('/health to answer 200 once Postgres and Redis are up', async () => (await fetch(`http://127.0.0.1:${started.port}/health`)).status === 200, 15_000)
  assert.match(started.stderr(), new RegExp(`^REDIS_URL \\(redis://127\\.0\\.0\\.1:${redisPort}\\) is not usable: .*; retrying in`, 'm'))
})
