/**
 * An open-loop load generator for the bench's latency scenario: requests leave at evenly spaced
 * times (a fixed offered rate), whether or not earlier ones were answered, and each latency runs
 * from the moment its request was due. autocannon's `overallRate` is not that: each connection
 * runs closed-loop until its quota for the current second is used, so every second starts with
 * all connections hammering at once and its percentiles measure that burst's queueing.
 */
import { Agent, request } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'

export interface PacedOptions {
  url: string
  /** Requests per second. */
  rate: number
  /** How many requests to send in all. */
  count: number
  /** Keep-alive connections at most (more requests wait for one, and that wait is latency). */
  connections: number
  /** The path (and query) of the i-th request; POST with no body. */
  path: (i: number) => string
  onResponse: (status: number, body: string) => void
}

export interface PacedResult {
  sent: number
  answered: number
  errors: number
  /** From the first request's departure to the last answer; `sendSeconds` to the last departure. */
  seconds: number
  sendSeconds: number
  /** Milliseconds. */
  p50: number
  p97_5: number
  p99: number
  max: number
}

export async function paced (opts: PacedOptions): Promise<PacedResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: opts.connections })
  const { hostname, port } = new URL(opts.url)
  const latencies: number[] = []
  let errors = 0
  let sent = 0
  let inFlight = 0
  let allSent = false
  let onDrained = () => {}
  const settled = () => {
    if (--inFlight === 0 && allSent) onDrained()
  }
  const send = (i: number, due: number) => {
    inFlight++
    const req = request({ agent, hostname, port, method: 'POST', path: opts.path(i) }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => {
        latencies.push(performance.now() - due)
        opts.onResponse(res.statusCode ?? 0, Buffer.concat(chunks).toString())
        settled()
      })
    })
    req.on('error', () => { errors++; settled() })
    req.end()
  }
  const started = performance.now()
  const interval = 1000 / opts.rate
  while (sent < opts.count) {
    // Everything due by now leaves now, stamped with the time it was due.
    const now = performance.now()
    while (sent < opts.count && started + sent * interval <= now) {
      send(sent, started + sent * interval)
      sent++
    }
    await sleep(1)
  }
  allSent = true
  const sendSeconds = (performance.now() - started) / 1000
  if (inFlight > 0) await new Promise<void>((resolve) => { onDrained = resolve })
  const seconds = (performance.now() - started) / 1000
  agent.destroy()
  latencies.sort((a, b) => a - b)
  const at = (q: number) => Math.round((latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN) * 10) / 10
  return { sent, answered: latencies.length, errors, seconds, sendSeconds, p50: at(0.5), p97_5: at(0.975), p99: at(0.99), max: at(1) }
}
