import { PassThrough } from 'node:stream'
import type { SaleSnapshotT } from '../../schemas/sale-page.js'
import { withDeadline } from '../lib/deadline.js'
import type { SaleSummary } from '../sale/service.js'
import { saleWindow } from '../sale/sale.js'
import { isoTime, presentSaleCounts } from './presenters.js'

/** What the feed reads each tick: the sale clock, the sale's counts, committed attempt totals. */
export interface SaleFeedDeps {
  now: () => number
  summary: (now: number) => Promise<SaleSummary>
  committedAttempts: () => { total: number, accepted: number }
  log: { warn (obj: unknown, msg?: string): void }
}

const TICK_MS = 1000
/** Checkouts per second are averaged over this window (samples one tick apart). */
const RATE_WINDOW_TICKS = 5
/** A client this far behind (a stalled connection) is dropped rather than buffered for. */
const MAX_BUFFERED_BYTES = 64 * 1024
const SUMMARY_DEADLINE_MS = 900

interface Sample { at: number, total: number, accepted: number }

/**
 * Fans one snapshot a second out to every open event stream. The timer runs only while someone
 * watches, a slow tick is never overlapped by the next, and `close()` ends every stream so
 * open pages never hold up a graceful shutdown.
 */
export class SaleFeed {
  readonly #deps: SaleFeedDeps
  readonly #clients = new Set<PassThrough>()
  #timer: NodeJS.Timeout | undefined
  #samples: Sample[] = []
  #last: string | null = null
  #ticking = false
  #closed = false

  constructor (deps: SaleFeedDeps) {
    this.#deps = deps
  }

  get size (): number {
    return this.#clients.size
  }

  open (): PassThrough | null {
    if (this.#closed) return null
    const stream = new PassThrough()
    // Reconnect after 2 s if the stream drops (e.g. a restart).
    stream.write('retry: 2000\n\n')
    if (this.#last !== null) stream.write(this.#last)
    this.#clients.add(stream)
    if (this.#timer === undefined) {
      const tick = () => { this.#tick().catch((err: unknown) => this.#deps.log.warn({ err }, 'sale feed tick failed')) }
      this.#timer = setInterval(tick, TICK_MS)
      tick()
    }
    return stream
  }

  remove (stream: PassThrough): void {
    this.#clients.delete(stream)
    if (this.#clients.size === 0) this.#stop()
  }

  close (): void {
    this.#closed = true
    this.#stop()
    for (const stream of this.#clients) stream.end()
    this.#clients.clear()
  }

  #stop (): void {
    clearInterval(this.#timer)
    this.#timer = undefined
    this.#samples = []
    this.#last = null
  }

  async #tick (): Promise<void> {
    if (this.#ticking) return
    this.#ticking = true
    try {
      const snapshot = await this.#snapshot()
      if (this.#timer === undefined) return
      const message = `data: ${JSON.stringify(snapshot)}\n\n`
      this.#last = message
      for (const stream of this.#clients) {
        if (stream.writableLength > MAX_BUFFERED_BYTES) {
          this.#clients.delete(stream)
          stream.destroy()
        } else {
          stream.write(message)
        }
      }
    } finally {
      this.#ticking = false
    }
  }

  async #snapshot (): Promise<SaleSnapshotT> {
    const { now: clock, summary, committedAttempts } = this.#deps
    const now = clock()
    const { total, accepted } = committedAttempts()
    const sample = { at: performance.now(), total, accepted }
    this.#samples.push(sample)
    if (this.#samples.length > RATE_WINDOW_TICKS + 1) this.#samples.shift()
    const first = this.#samples[0] as Sample
    const seconds = (sample.at - first.at) / 1000
    const perSecond = (n: number) => seconds > 0 ? Math.round(n / seconds * 10) / 10 : 0

    let status: SaleSnapshotT['status'] = 'live'
    let sale: SaleSnapshotT['sale'] = null
    try {
      sale = presentSaleCounts(await withDeadline(summary(now), SUMMARY_DEADLINE_MS))
    } catch {
      status = 'unavailable'
    }
    return {
      status,
      now: isoTime(now),
      sale,
      next_sale_at: isoTime(saleWindow(now).endsAt),
      checkouts_per_second: perSecond(total - first.total),
      accepted_per_second: perSecond(accepted - first.accepted)
    }
  }
}
