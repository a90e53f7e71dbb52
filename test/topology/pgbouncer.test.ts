import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import pg from 'pg'
import { buildApp } from '../../src/app.js'
import type { Config } from '../../src/config.js'
import { SaleRepository } from '../../src/sale/repository.js'
import { freePort, kill, missingTool, query, waitFor } from '../support/fault-kit.js'
import { buildTestApp, checkout, isolatedConfig, purchase, TestClock } from '../support/helpers.js'

const T0 = '2031-03-04T13:10:00.000Z'

/**
 * A PgBouncer of the test's own (Debian's pgbouncer, 1.18) in transaction mode in front of the
 * shared Postgres, with 3 server connections for many more clients, so the service's statements
 * really share server sessions. `connectQuery` is what every server connection runs first.
 */
async function startPgBouncer (t: TestContext, config: Config, connectQuery: string | null): Promise<string> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'flash-pgbouncer-'))
  chmodSync(dir, 0o755) // readable by the postgres user it switches to
  const server = new URL(config.DATABASE_URL)
  const file = join(dir, 'pgbouncer.ini')
  writeFileSync(file, [
    '[databases]',
    `flash = host=${server.hostname} port=${server.port || 5432} dbname=${server.pathname.slice(1) || 'postgres'} user=${server.username || 'postgres'}` +
      (connectQuery === null ? '' : ` connect_query='${connectQuery}'`),
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${port}`,
    'unix_socket_dir =',
    'auth_type = any',
    'pool_mode = transaction',
    'default_pool_size = 3',
    'max_client_conn = 200'
  ].join('\n'))
  chmodSync(file, 0o644)
  // PgBouncer refuses to run as root; -u switches to the postgres user.
  const child = spawn('pgbouncer', [...process.getuid?.() === 0 ? ['-u', 'postgres'] : [], file], { stdio: 'ignore' })
  t.after(async () => {
    await kill(child)
    rmSync(dir, { recursive: true, force: true })
  })
  const url = `postgres://postgres@127.0.0.1:${port}/flash`
  await waitFor(`PgBouncer on port ${port} to accept a connection`, async () => {
    const client = new pg.Client({ connectionString: url })
    try { await client.connect(); return true } finally { await client.end().catch(() => {}) }
  }, 5000)
  return url
}

/** The test's configuration with DATABASE_URL through the bouncer; cleanup and DDL go straight to Postgres. */
function throughBouncer (direct: Config, url: string, overrides: Partial<Config> = {}): Config {
  return { ...direct, DATABASE_URL: url, DATABASE_DIRECT_URL: direct.DATABASE_URL, DATABASE_POOL_MODE: 'transaction', ...overrides }
}

const sessionSettings = (config: Config) =>
  `SET search_path = ${config.DATABASE_SCHEMA}; SET statement_timeout = ${config.PG_QUERY_TIMEOUT_MS}; SET idle_in_transaction_session_timeout = ${config.PG_QUERY_TIMEOUT_MS}`

test('the service runs through PgBouncer in transaction mode: checkout, purchase, refusals, a crowd, sale:status', { skip: missingTool('pgbouncer') }, async (t) => {
  const direct = isolatedConfig(t, { SALE_ITEMS: 60, USER_LIMIT: 3, PG_POOL_MAX: 20 })
  const config = throughBouncer(direct, await startPgBouncer(t, direct, sessionSettings(direct)))
  const clock = new TestClock(Date.parse(T0))
  const app = await buildTestApp(t, config, clock)

  const first = await checkout(app, 'user_id=alice&id=1')
  assert.equal(first.statusCode, 200)
  const code = first.json<{ code: string }>().code
  assert.equal((await purchase(app, code)).statusCode, 200)
  assert.equal((await purchase(app, code)).json().error, 'code_used')
  assert.equal((await checkout(app, 'user_id=bob&id=1')).json().error, 'item_sold')
  assert.equal((await checkout(app, 'user_id=bob&id=999')).json().error, 'unknown_item')
  assert.equal((await checkout(app, 'user_id=&id=2')).json().error, 'invalid_request')
  assert.equal((await app.inject({ method: 'GET', url: '/' })).statusCode, 200)

  // A crowd over 20 pool connections sharing 3 server connections.
  const acked = { codes: new Set<string>([code]), purchases: new Set<string>([code]), requests: 4 }
  await Promise.all(Array.from({ length: 40 }, async (_, u) => {
    for (let i = 0; i < 6; i++) {
      const res = await checkout(app, `user_id=c${u}&id=${1 + ((u * 7 + i) % 60)}`)
      acked.requests++
      assert.ok(res.statusCode < 500, `checkout ${res.statusCode} ${res.body}`)
      if (res.statusCode !== 200) continue
      const c = res.json<{ code: string }>().code
      acked.codes.add(c)
      const paid = await purchase(app, c)
      assert.ok(paid.statusCode < 500, `purchase ${paid.statusCode} ${paid.body}`)
      if (paid.statusCode === 200) acked.purchases.add(c)
    }
  }))
  assert.ok(acked.purchases.size > 20)

  const attempts = await query<{ code: string | null }>(direct, 'SELECT code FROM checkout_attempts')
  assert.equal(attempts.length, acked.requests, 'every checkout request is a row')
  const codes = new Set(attempts.map((r) => r.code))
  for (const c of acked.codes) assert.ok(codes.has(c), `checkout ${c} committed`)
  const purchases = await query<{ code: string, item_id: number }>(direct, 'SELECT code, item_id FROM purchases')
  assert.deepEqual(new Set(purchases.map((r) => r.code)), acked.purchases, 'exactly the acknowledged purchases')
  assert.equal(new Set(purchases.map((r) => r.item_id)).size, purchases.length, 'no item sold twice')

  const [report] = await new SaleRepository(app.pg.pool).report(clock.ms, 1)
  assert.equal(report?.sold, purchases.length, 'sale:status through the bouncer')
  assert.ok((await app.partitions.partitions()).length >= 8, 'partition DDL went straight to Postgres')
})

test('behind a transaction-mode pooler the session settings must come from the pooler: start-up refuses one without them', { skip: missingTool('pgbouncer') }, async (t) => {
  const direct = isolatedConfig(t)
  const bare = await startPgBouncer(t, direct, null)
  await assert.rejects(buildApp(throughBouncer(direct, bare), { fastify: { logger: false } }),
    /DATABASE_POOL_MODE=transaction: the pooler's connections have search_path .* they need search_path = t_/)
})
