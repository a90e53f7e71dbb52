import { createServer } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import type { Config } from './config.js'
import { POSTGRES_HINT, REDIS_HINT } from './local-dependencies.js'
import { createRedisClient, redisTopology } from './redis/client.js'

/**
 * Start-up checks of the server entry (src/server.ts), each failure one line that names the
 * variable to fix and its target, never a stack trace: the listen address is free (checked first,
 * so nothing is migrated or rebuilt for a process that cannot serve), then Postgres and Redis
 * answer. Containers start in any order, so an unreachable dependency is retried with backoff for
 * up to STARTUP_WAIT_SECONDS, each wait logged, before giving up.
 */

/** A dependency as the operator configured it: the variable, a target safe to print, a probe, how to get one. */
interface Dependency { variable: string, target: string, probe: () => Promise<void>, hint: string }

const FIRST_WAIT_MS = 250
const LONGEST_WAIT_MS = 5000

/** The URL without its password, to print. */
export function printableUrl (url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password !== '') parsed.password = '***'
    return parsed.toString()
  } catch {
    return '(unparsable URL)'
  }
}

/** One line for an error: its message, with the socket error code when the message lacks it. */
const reason = (error: unknown): string => {
  if (!(error instanceof Error)) return String(error)
  const code = (error as NodeJS.ErrnoException).code
  // A refused connection to a dual-stack name is an AggregateError with an empty message.
  const message = error.message || (error instanceof AggregateError ? String(error.errors[0]?.message ?? '') : '')
  return code !== undefined && !message.includes(code) ? `${message} (${code})` : message
}

/** Throws a one-line reason when HOST:PORT cannot be listened on (in use, not permitted, no such address). */
export async function assertListenable (host: string, port: number): Promise<void> {
  const server = createServer()
  try {
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen({ host, port }, resolve))
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    const why = code === 'EADDRINUSE' ? 'is already in use by another process' : `cannot be listened on (${reason(error)})`
    throw new StartupError(`PORT=${port} (HOST=${host}) ${why}`)
  } finally {
    await new Promise((resolve) => server.close(resolve))
  }
}

/** The variable that names the Redis to reach, as the operator set it (passwords hidden). */
function redisAddress (config: Config): { variable: string, target: string } {
  switch (redisTopology(config)) {
    case 'sentinel': return { variable: 'REDIS_SENTINELS', target: `${config.REDIS_SENTINELS} (${config.REDIS_SENTINEL_NAME})` }
    case 'cluster': return { variable: 'REDIS_CLUSTER_NODES', target: config.REDIS_CLUSTER_NODES }
    case 'single': return { variable: 'REDIS_URL', target: printableUrl(config.REDIS_URL) }
  }
}

function dependencies (config: Config): Dependency[] {
  return [
    {
      variable: 'DATABASE_URL',
      target: printableUrl(config.DATABASE_URL),
      hint: POSTGRES_HINT,
      probe: async () => {
        const client = new pg.Client({ connectionString: config.DATABASE_URL, connectionTimeoutMillis: config.PG_CONNECT_TIMEOUT_MS })
        client.on('error', () => {}) // a late socket error after a failed connect is already reported
        try {
          await client.connect()
          await client.query('SELECT 1')
        } finally {
          await client.end().catch(() => {})
        }
      }
    },
    {
      ...redisAddress(config),
      hint: REDIS_HINT,
      probe: async () => {
        const client = createRedisClient(config, {
          lazyConnect: true,
          retryStrategy: () => null,
          maxRetriesPerRequest: 0,
          enableOfflineQueue: false,
          connectTimeout: config.REDIS_COMMAND_TIMEOUT_MS
        })
        let lastError: unknown = null
        client.on('error', (error) => { lastError = error })
        try {
          await client.connect()
          await client.ping()
        } catch (error) {
          // ioredis reports "Connection is closed." for a refused socket; the socket error says why.
          throw lastError ?? error
        } finally {
          client.disconnect()
        }
      }
    }
  ]
}

/**
 * Waits until every dependency answers, retrying with backoff (250 ms doubling up to 5 s) until
 * `waitSeconds` passed. Each round probes all of them, so one line on `log` names every one still
 * unreachable. At the deadline, throws a StartupError naming each with how to get it.
 */
export async function waitForDependencies (config: Config, waitSeconds: number, log: (line: string) => void): Promise<void> {
  const deadline = Date.now() + waitSeconds * 1000
  let pending = dependencies(config)
  for (let wait = FIRST_WAIT_MS; ; wait = Math.min(wait * 2, LONGEST_WAIT_MS)) {
    const failures = (await Promise.all(pending.map(async (dependency) => {
      try {
        await dependency.probe()
        return null
      } catch (error) {
        return { dependency, line: `${dependency.variable} (${dependency.target}) is not usable: ${reason(error)}` }
      }
    }))).filter((failure) => failure !== null)
    if (failures.length === 0) return
    pending = failures.map(({ dependency }) => dependency)
    const lines = failures.map(({ line }) => line).join('; ')
    const left = deadline - Date.now()
    if (left <= 0) {
      throw new StartupError(`${lines}; gave up after STARTUP_WAIT_SECONDS=${waitSeconds}. ` +
        `A variable that is set is used as it is; to get ${failures.length === 1 ? 'it' : 'them'}: ` +
        failures.map(({ dependency }) => dependency.hint).join('. '))
    }
    const pause = Math.min(wait, left)
    log(`${lines}; retrying in ${(pause / 1000).toFixed(2)} s (STARTUP_WAIT_SECONDS=${waitSeconds})`)
    await sleep(pause)
  }
}

/** Which Postgres and Redis the service uses, for its start-up line: those started here, else the configured ones. */
export function describeDependencies (config: Config, local: { postgres?: string, redis?: string } = {}): string {
  return `${local.postgres ?? `Postgres ${printableUrl(config.DATABASE_URL)}`}, ${local.redis ?? `Redis ${redisAddress(config).target}`}`
}

/** A start-up failure whose message is the whole story for the operator: printed alone, no stack. */
export class StartupError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'StartupError'
  }
}
