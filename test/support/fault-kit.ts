import assert from 'node:assert/strict'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { chownSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import pg from 'pg'
import { localPortsTo } from '../../bench/sockets.js'
import type { Config } from '../../src/config.js'

/**
 * Fault injection shared by the tests that break real things: the service as a child process
 * (killed with real signals), a dedicated redis-server and a dedicated Postgres cluster (killed
 * and restarted without disturbing the other test files), and the checks that nothing the
 * service acknowledged was lost.
 */

/** A loopback TCP port nobody listens on right now (the kernel picks it). */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

/**
 * Polls `check` every 50 ms until it holds; a throw counts as "not yet". On timeout the error
 * names the condition (`description`: what was awaited, e.g. 'the spool to be empty') and what
 * was last seen: how the last check failed, and `observe()` if given (called once, at the
 * timeout, so it may cost a query).
 */
export async function waitFor (description: string, check: () => Promise<boolean>, ms: number, observe?: () => unknown): Promise<void> {
  const started = Date.now()
  for (;;) {
    let last = 'returned false'
    const held = await check().catch((error: unknown) => {
      last = `threw ${error instanceof Error ? error.message : String(error)}`
      return false
    })
    if (held) return
    if (Date.now() - started > ms) {
      let observed = ''
      if (observe !== undefined) {
        observed = await Promise.resolve().then(observe).then(
          (value) => `; observed: ${typeof value === 'string' ? value : JSON.stringify(value)}`,
          (error: unknown) => `; observing failed: ${String(error)}`)
      }
      throw new Error(`timed out after ${ms} ms waiting for ${description} (last check ${last}${observed})`)
    }
    await sleep(50)
  }
}

export interface Service { child: ChildProcess, url: string, port: number, exited: Promise<number | null> }

export interface ServiceOptions {
  /** Listen here instead of a fresh port: a restarted service keeps its address. */
  port?: number
  /** More environment for the child, e.g. shorter Postgres timeouts. */
  env?: Record<string, string>
}

/** How long a started service may take to answer /health (see startService). */
const START_TIMEOUT_MS = 40_000

/**
 * The service as a real process (the same entry as `npm start`, through tsx) on the test's
 * schema, key prefix, Postgres and Redis; resolves once /health answers 200. Killed when the
 * test ends.
 */
export async function startService (t: TestContext, config: Config, options: ServiceOptions = {}): Promise<Service> {
  const port = options.port ?? await freePort()
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    env: {
      ...process.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'error',
      DATABASE_URL: config.DATABASE_URL,
      DATABASE_SCHEMA: config.DATABASE_SCHEMA,
      REDIS_URL: config.REDIS_URL,
      REDIS_KEY_PREFIX: config.REDIS_KEY_PREFIX,
      SPOOL_DIR: config.SPOOL_DIR,
      SALE_ITEMS: String(config.SALE_ITEMS),
      USER_LIMIT: String(config.USER_LIMIT),
      CHECKOUT_TTL_SECONDS: String(config.CHECKOUT_TTL_SECONDS),
      SHUTDOWN_GRACE_MS: '5000',
      ...options.env
    },
    stdio: ['ignore', 'ignore', 'inherit']
  })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.after(() => { child.kill('SIGKILL') })
  const url = `http://127.0.0.1:${port}`
  // tsx compiles the service at start: on a CPU-starved CI host (2 cores, four test files at
  // once) that alone has taken over 15 s, so the bound is generous; a healthy start takes ~1 s.
  const deadline = Date.now() + START_TIMEOUT_MS
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`service exited with ${child.exitCode}`)
    if (await fetch(`${url}/health`).then((r) => r.ok, () => false)) return { child, url, port, exited }
    await sleep(100)
  }
  throw new Error(`service did not start within ${START_TIMEOUT_MS / 1000} s`)
}

/** What the service acknowledged: checkout codes (200) and purchase ids by code (200). */
export interface Acks { codes: Set<string>, purchases: Map<string, number>, stop: boolean }

export const newAcks = (): Acks => ({ codes: new Set(), purchases: new Map(), stop: false })

/** Users buying as fast as they can until told to stop or the service goes away. */
export function load (url: string, acks: Acks, users: number, items: number): Promise<void[]> {
  return Promise.all(Array.from({ length: users }, async (_, u) => {
    while (!acks.stop) {
      try {
        const res = await fetch(`${url}/checkout?user_id=u${u}&id=${1 + Math.floor(Math.random() * items)}`, { method: 'POST' })
        const body = await res.json() as { code?: string }
        if (res.status !== 200 || !body.code) continue
        acks.codes.add(body.code)
        const bought = await fetch(`${url}/purchase?code=${body.code}`, { method: 'POST' })
        if (bought.status === 200) acks.purchases.set(body.code, ((await bought.json()) as { purchase_id: number }).purchase_id)
      } catch {
        return // the service is gone
      }
    }
  }))
}

/** One query on a fresh connection to the test's schema (works after the service is gone). */
export async function query<T extends pg.QueryResultRow> (config: Config, text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: config.DATABASE_URL, options: `-c search_path=${config.DATABASE_SCHEMA}` })
  await client.connect()
  try {
    return (await client.query<T>(text, values)).rows
  } finally {
    await client.end()
  }
}

/** Every acknowledged checkout and purchase (with its id) is committed, and no item sold twice. */
export async function assertAcknowledgedAreCommitted (config: Config, acks: Acks): Promise<void> {
  const codes = await query<{ code: string }>(config, "SELECT code FROM checkout_attempts WHERE outcome = 'accepted'")
  const committed = new Set(codes.map((r) => r.code))
  for (const code of acks.codes) assert.ok(committed.has(code), `acknowledged checkout ${code} is in Postgres`)
  const purchases = await query<{ id: string, code: string }>(config, 'SELECT id, code FROM purchases')
  const byCode = new Map(purchases.map((r) => [r.code, Number(r.id)]))
  for (const [code, id] of acks.purchases) assert.equal(byCode.get(code), id, `acknowledged purchase ${id} is in Postgres`)
  const [dupes] = await query<{ n: number }>(config, 'SELECT count(*)::int - count(DISTINCT item_id)::int AS n FROM purchases')
  assert.equal(dupes?.n, 0, 'no item sold twice')
}

/** No user bought more than `limit` items (the offenders are named if any did). */
export async function assertNoUserOverLimit (config: Config, limit: number): Promise<void> {
  const over = await query(config, 'SELECT user_id, count(*)::int AS n FROM purchases GROUP BY user_id HAVING count(*) > $1', [limit])
  assert.deepEqual(over, [], 'no user over the limit')
}

/** The sale sold exactly `items` items, each once. */
export async function assertSoldOutExactly (config: Config, items: number): Promise<void> {
  const [sold] = await query<{ purchases: number, items: number }>(config,
    'SELECT count(*)::int AS purchases, count(DISTINCT item_id)::int AS items FROM purchases')
  assert.deepEqual(sold, { purchases: items, items }, 'sold out exactly, each item once')
}

/**
 * A dedicated, disposable redis-server on its own port, so killing it disturbs no other test.
 * `env` is added to its environment (e.g. libfaketime's, for a server whose clock is off).
 */
export function startRedis (port: number, env: Record<string, string> = {}): ChildProcess {
  return spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore', env: { ...process.env, ...env } })
}

/** True when a Redis answers PING on this loopback port. */
export async function pingRedis (port: number): Promise<boolean> {
  const probe = new Redis(port, '127.0.0.1', { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
  probe.on('error', () => {})
  try { await probe.connect(); return await probe.ping() === 'PONG' } finally { probe.disconnect() }
}

/** Sends SIGKILL and resolves once the process is gone (at once if it already is). */
export async function kill (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGKILL')
  await exited
}

/**
 * Terminates the Postgres sessions of one service process, and only those: the service names
 * every session 'flash-sale', so the name alone would hit other test files' services too. The
 * child's own TCP sockets (/proc/<pid>/fd -> socket inodes -> /proc/net/tcp{,6}) give their local
 * ports, which pg_stat_activity shows as client_port. Returns how many sessions were ended.
 */
export async function terminatePostgresSessionsOf (config: Config, pid: number): Promise<number> {
  const ports = localPortsTo(pid, Number(new URL(config.DATABASE_URL).port || 5432))
  if (ports.length === 0) return 0
  const ended = await query<{ ok: boolean }>(config,
    `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
     WHERE application_name = 'flash-sale' AND client_addr IN ('127.0.0.1', '::1') AND client_port = ANY($1::int[])`, [ports])
  return ended.filter((r) => r.ok).length
}

/**
 * A skip reason when a Debian tool a test drives is missing, outside CI (`.ci/run` installs them;
 * under CI a missing tool fails the test instead of hiding it). False when it is there.
 */
export function missingTool (command: string, debianPackage = command): string | false {
  if (process.env.CI) return false
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' })
    return false
  } catch {
    return `needs ${command} (Debian package ${debianPackage}; .ci/run installs it)`
  }
}

/** Root can switch to the postgres user, which the dedicated cluster needs. */
export const canSwitchUser = process.getuid?.() === 0

/**
 * A dedicated, disposable Postgres cluster on its own port (initdb + pg_ctl as the postgres
 * user), so stopping it disturbs no other test. Needs root to switch to that user, as CI has.
 */
export function dedicatedPostgres (t: TestContext) {
  const bin = join('/usr/lib/postgresql', readdirSync('/usr/lib/postgresql')[0] as string, 'bin')
  const dir = mkdtempSync(join(tmpdir(), 'flash-pg-'))
  chownSync(dir, Number(execFileSync('id', ['-u', 'postgres']).toString()), Number(execFileSync('id', ['-g', 'postgres']).toString()))
  const port = 25000 + Math.floor(Math.random() * 5000)
  const asPostgres = (cmd: string) => execFileSync('su', ['postgres', '-s', '/bin/sh', '-c', cmd], { stdio: 'ignore' })
  asPostgres(`${bin}/initdb -D ${dir}/data -A trust -U postgres`)
  const ctl = (action: string) => asPostgres(`${bin}/pg_ctl -D ${dir}/data -w -t 30 -l ${dir}/log -o "-p ${port} -k ${dir} -c listen_addresses=127.0.0.1" ${action}`)
  ctl('start')
  t.after(() => {
    try { signalAll('SIGCONT') } catch { /* not running */ }
    try { ctl('stop -m immediate') } catch { /* already stopped */ }
    rmSync(dir, { recursive: true, force: true })
  })
  /** The postmaster and every process it forked (backends, WAL writer, ...), read from /proc. */
  const clusterPids = (): number[] => {
    const postmaster = Number(readFileSync(join(dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0])
    const children = readdirSync('/proc').filter((entry) => /^\d+$/.test(entry)).filter((pid) => {
      try { return Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[1]) === postmaster } catch { return false }
    }).map(Number)
    return [postmaster, ...children]
  }
  const signalAll = (signal: NodeJS.Signals) => { for (const pid of clusterPids()) process.kill(pid, signal) }
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start: () => ctl('start'),
    stop: () => ctl('stop -m immediate'),
    /** `pg_ctl stop -m fast`: sessions are terminated (57P01), new connections refused (57P03), then the server exits cleanly. */
    stopFast: () => ctl('stop -m fast'),
    /** Freezes the whole cluster (SIGSTOP): statements already sent run, and commit, only after `resume`. */
    stall: () => signalAll('SIGSTOP'),
    resume: () => signalAll('SIGCONT')
  }
}
