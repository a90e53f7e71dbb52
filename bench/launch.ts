/**
 * The processes a bench scenario loads: the service (with its own schema and key prefix), the
 * bare route and the floor (compiled, like the service), and the CPU meter over them, Redis and
 * Postgres.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { loadConfig } from '../src/config.js'
import { CpuMeter, postmasterPid, redisPid } from './cpu.js'
import { clusterMode, dist, nodeFlags, startFlags, USER_LIMIT } from './options.js'
import { untilHealthy } from './processes.js'

export const runId = `bench_${Date.now().toString(36)}_${randomBytes(2).toString('hex')}`
export const base = loadConfig()
export const pids = { redis: await redisPid(base.REDIS_URL).catch(() => 0), postgres: await postmasterPid(base.DATABASE_URL).catch(() => 0) }

export interface Service { url: string, child: ChildProcess, schema: string }

let nextPort = 3400 + Math.floor(Math.random() * 500)

/** Where each process writes its V8 CPU profile, if anywhere: bench/results/ with BENCH_PROFILE=1. */
const PROFILE_DIR = process.env.BENCH_PROFILE ? 'bench/results' : undefined

/** Starts a process that answers GET /health, and waits for it; `profileDir` gets its CPU profile. */
export async function startProcess (args: string[], env: Record<string, string>, profileDir = PROFILE_DIR): Promise<{ url: string, child: ChildProcess }> {
  const port = nextPort++
  const profile = profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}`]
  const child = spawn(process.execPath, [...profile, ...args], {
    env: { ...process.env, ...env, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'inherit', 'inherit']
  })
  const url = `http://127.0.0.1:${port}`
  await untilHealthy(child, url, args.join(' '), 200)
  return { url, child }
}

/** The service on a fresh schema and key prefix named after the run and `name`. */
export async function startService (name: string, items: number, env: Record<string, string> = {}, profileDir = PROFILE_DIR): Promise<Service> {
  const schema = `${runId}_${name}`
  const { url, child } = await startProcess([...startFlags, ...nodeFlags, `${dist}/src/${clusterMode ? 'cluster' : 'server'}.js`], {
    DATABASE_SCHEMA: schema,
    REDIS_KEY_PREFIX: `${schema}:`,
    SALE_ITEMS: String(items),
    USER_LIMIT: String(USER_LIMIT),
    ...env
  }, profileDir)
  return { url, child, schema }
}

/** The floor server (bench/floor-server.ts) on a schema of its own, which it drops when stopped. */
export async function startFloor (name: string, profileDir = PROFILE_DIR): Promise<{ url: string, child: ChildProcess }> {
  const schema = `${runId}_${name}`
  return await startProcess(['dist/bench/floor-server.js'], {
    MODE: 'full', DATABASE_URL: base.DATABASE_URL, REDIS_URL: base.REDIS_URL, DATABASE_SCHEMA: schema, REDIS_KEY_PREFIX: `${schema}:`
  }, profileDir)
}

export const meterFor = (child: ChildProcess): CpuMeter => new CpuMeter({ service: child.pid as number, ...pids })
