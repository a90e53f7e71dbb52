/**
 * CPU time of the processes a bench scenario loads, from /proc (utime + stime, in clock ticks).
 * Req/s on a shared 2-core machine swings with the host; CPU per request of each process does
 * not, so this is what runs are compared on.
 *
 * A process's figure includes its descendants: live ones are read directly, exited ones are in
 * the parent's cutime + cstime once reaped. So a Postgres backend that exits mid-run or a cluster
 * worker that restarts is still counted, whichever side of the sample its exit falls on.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import { Redis } from 'ioredis'
import pg from 'pg'

const CLOCK_TICKS_PER_S = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
const US_PER_TICK = 1_000_000 / CLOCK_TICKS_PER_S

/** Fields of /proc/<pid>/stat after the command (which may contain spaces and parentheses). */
function statFields (pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  } catch {
    return null // exited meanwhile
  }
}

// Indexes into statFields (man 5 proc numbers them from 1 with pid and comm first).
const PPID = 1
const UTIME = 11
const STIME = 12
const CUTIME = 13
const CSTIME = 14

function childrenOf (pid: number): number[] {
  const children: number[] = []
  let tasks: string[] = []
  try { tasks = readdirSync(`/proc/${pid}/task`) } catch { return children }
  for (const task of tasks) {
    try {
      for (const child of readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').split(' ')) {
        if (child.trim() !== '') children.push(Number(child))
      }
    } catch { /* task gone */ }
  }
  return children
}

/** CPU µs of `pid` alone (all its threads), not its children. */
export function ownCpuUs (pid: number): number {
  const f = statFields(pid)
  return f === null ? 0 : (Number(f[UTIME]) + Number(f[STIME])) * US_PER_TICK
}

/** CPU µs of `pid`, its live descendants and its reaped children. */
export function treeCpuUs (pid: number): number {
  const f = statFields(pid)
  if (f === null) return 0
  let ticks = Number(f[UTIME]) + Number(f[STIME]) + Number(f[CUTIME]) + Number(f[CSTIME])
  for (const child of childrenOf(pid)) ticks += treeCpuUs(child) / US_PER_TICK
  return ticks * US_PER_TICK
}

/** The redis-server process behind `url` (INFO's process_id; Redis runs on this host). */
export async function redisPid (url: string): Promise<number> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 })
  try {
    await client.connect()
    return Number(/process_id:(\d+)/.exec(await client.info('server'))?.[1])
  } finally {
    client.disconnect()
  }
}

/** The postmaster of the cluster behind `url`: the parent of any backend. */
export async function postmasterPid (url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')
    return Number(statFields(rows[0]?.pid as number)?.[PPID])
  } finally {
    await client.end()
  }
}

export interface ProcessCpu {
  /** The service and its cluster workers. */
  service: number
  /** redis-server (every thread). */
  redis: number
  /** The whole Postgres cluster: postmaster, backends, WAL writer, checkpointer, ... */
  postgres: number
  /** This process: autocannon and the bench's own bookkeeping. */
  loadGenerator: number
}

/** Samples the CPU of each process a scenario loads; `perRequest` divides the difference. */
export class CpuMeter {
  readonly #pids: { service: number, redis: number, postgres: number }
  #start: ProcessCpu | null = null

  constructor (pids: { service: number, redis: number, postgres: number }) {
    this.#pids = pids
  }

  #sample (): ProcessCpu {
    return {
      service: treeCpuUs(this.#pids.service),
      redis: this.#pids.redis > 0 ? treeCpuUs(this.#pids.redis) : NaN,
      postgres: this.#pids.postgres > 0 ? treeCpuUs(this.#pids.postgres) : NaN,
      loadGenerator: ownCpuUs(process.pid)
    }
  }

  start (): void {
    this.#start = this.#sample()
  }

  /** CPU µs per request of each process since `start`, rounded. */
  perRequest (requests: number): ProcessCpu {
    const end = this.#sample()
    const start = this.#start as ProcessCpu
    const per = (key: keyof ProcessCpu) => Math.round((end[key] - start[key]) / Math.max(1, requests))
    return { service: per('service'), redis: per('redis'), postgres: per('postgres'), loadGenerator: per('loadGenerator') }
  }
}
