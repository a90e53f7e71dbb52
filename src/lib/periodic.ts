/** Where a job's failures go: one line at `level` per failure run after a success (an outage is logged once, its end too). */
interface JobLog {
  warn (obj: unknown, msg?: string): void
  info (obj: unknown, msg?: string): void
  debug (obj: unknown, msg?: string): void
}

export interface JobOptions {
  /** Also run once right away (off the caller's path: on the next turn of the event loop). */
  now?: boolean
  /** Log level of a failure (default warn); `debug` for jobs whose failure another signal reports. */
  failureLevel?: 'warn' | 'debug'
}

/**
 * The service's periodic jobs, each on its own unref()ed timer: a run never overlaps the job's
 * previous one (a slow dependency cannot pile them up), a failure is logged once until the job
 * succeeds again, and `stop()` clears every timer and waits for the runs in flight.
 */
export class PeriodicJobs {
  readonly #log: JobLog
  readonly #timers: NodeJS.Timeout[] = []
  readonly #running = new Set<Promise<unknown>>()

  constructor (log: JobLog) {
    this.#log = log
  }

  every (name: string, ms: number, run: () => Promise<unknown>, options: JobOptions = {}): void {
    let busy = false
    let failing = false
    const tick = () => {
      if (busy) return
      busy = true
      const pending = run().then(() => {
        if (failing) this.#log.info({ job: name }, `${name}: recovered`)
        failing = false
      }, (err: unknown) => {
        if (!failing) this.#log[options.failureLevel ?? 'warn']({ err, job: name }, `${name} failed; retrying every ${ms} ms`)
        failing = true
      }).finally(() => {
        busy = false
        this.#running.delete(pending)
      })
      this.#running.add(pending)
    }
    if (options.now === true) this.#timers.push(setTimeout(tick, 0).unref())
    this.#timers.push(setInterval(tick, ms).unref())
  }

  async stop (): Promise<void> {
    for (const timer of this.#timers) clearTimeout(timer)
    await Promise.allSettled([...this.#running])
  }
}
