/** One scenario's measurement: autocannon runs, CPU per request, and the row the report prints. */
import type { ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import autocannon from 'autocannon'
import type { ProcessCpu } from './cpu.js'
import { meterFor } from './launch.js'

export interface Row {
  scenario: string
  requests: number
  /** Achieved: requests answered per second of the run. */
  reqPerSec: number
  p50: number
  p97_5: number
  p99: number
  errors: number
  timeouts: number
  non2xx: number
  refusals: Record<string, number>
  /** CPU µs per request of each process during the scenario. */
  cpuUsPerRequest: ProcessCpu
  idleRssMb: number | null
  peakRssMb: number | null
  seconds: number
  extra?: Record<string, number | string>
}

export function row (scenario: string, result: autocannon.Result, refusals: Record<string, number>, cpu: ProcessCpu,
  rss: { idle: number | null, peak: number | null }, extra?: Row['extra']): Row {
  return {
    scenario,
    requests: result.requests.total,
    reqPerSec: Math.round(result.requests.average),
    p50: result.latency.p50,
    p97_5: result.latency.p97_5,
    p99: result.latency.p99,
    errors: result.errors,
    timeouts: result.timeouts,
    non2xx: result.non2xx,
    refusals,
    cpuUsPerRequest: cpu,
    idleRssMb: rss.idle,
    peakRssMb: rss.peak,
    seconds: result.duration,
    ...(extra ? { extra } : {})
  }
}

/** Counts a non-2xx answer under its status and `error` code. */
export const countRefusal = (refusals: Record<string, number>, status: number, body: string): void => {
  if (status < 300) return
  let code = String(status)
  try { code = `${status} ${(JSON.parse(body) as { error: string }).error}` } catch { /* not JSON */ }
  refusals[code] = (refusals[code] ?? 0) + 1
}

/** The sale a successful checkout or purchase answer belongs to. */
export const saleOf = (body: string): number => Number(/"sale_id":(\d+)/.exec(body)?.[1])

export const bump = (counts: Map<number, number>, key: number): void => { counts.set(key, (counts.get(key) ?? 0) + 1) }

/** A checkout by a random user of `users` for a random item of `1..items`: the crowd of the stampede and the floor. */
export const randomCheckout = (users: number, items: number): string =>
  `/checkout?user_id=u${Math.floor(Math.random() * users)}&id=${1 + Math.floor(Math.random() * items)}`

/** The host's count of connections dropped because a listen queue was full (TcpExt ListenOverflows). */
export function listenOverflows (): number {
  const [names, values] = readFileSync('/proc/net/netstat', 'utf8').split('\n').filter((line) => line.startsWith('TcpExt:'))
  const i = names?.split(' ').indexOf('ListenOverflows') ?? -1
  return i < 0 ? NaN : Number(values?.split(' ')[i])
}

/**
 * Starts autocannon with its progress bar; `progress: false` drops the bar and its "Running Ns test"
 * line, for a run that stops itself long before its `duration`.
 */
export const run = (opts: autocannon.Options, progress = true): { instance: autocannon.Instance, done: Promise<autocannon.Result> } => {
  let instance!: autocannon.Instance
  const done = new Promise<autocannon.Result>((resolve, reject) => {
    instance = autocannon(opts, (err, result) => err ? reject(err) : resolve(result))
  })
  autocannon.track(instance, { renderProgressBar: progress, renderResultsTable: false, renderLatencyTable: false })
  return { instance, done }
}

/** Runs autocannon and measures each process's CPU per request meanwhile. */
export async function measured (child: ChildProcess, opts: autocannon.Options): Promise<{ result: autocannon.Result, cpu: ProcessCpu }> {
  const meter = meterFor(child)
  meter.start()
  const result = await run(opts).done
  return { result, cpu: meter.perRequest(result.requests.total) }
}
