import { ServiceUnavailable } from '../sale/errors.js'

/** The part of an ioredis client (standalone, Sentinel or Cluster) the clock reads. */
export interface TimeSource {
  /** `TIME`: seconds and microseconds. */
  time (): Promise<Array<string | number>>
}

/** Another clock to compare with (Postgres's): its reading, in ms since the epoch. */
export type Witness = () => Promise<number>

export interface SaleClockOptions {
  /** Redis's `TIME`, the source of the sale clock. Absent, this host's clock is the source (CLOCK_SOURCE=local). */
  redis?: TimeSource
  /** Other clocks compared with the source at each sync, by name (`postgres`). */
  witnesses?: Record<string, Witness>
  /** The largest disagreement tolerated between two clocks, in ms (CLOCK_SKEW_MAX_MS); 0 turns the comparisons off. */
  skewMaxMs: number
  /** This host's clock (tests shift it). */
  local?: () => number
  /** A monotonic clock in ms (tests drive it): it carries the sale clock from one reading to the next. */
  mono?: () => number
}

/** What the clocks said at the last comparisons (for /metrics and the log). */
export interface ClockSkew {
  /** True while sale decisions are refused (503 `clock_skew`). */
  refusing: boolean
  /**
   * The source's time minus another clock's, in ms: `host` (this host's clock, when Redis is the
   * source), each witness (`postgres`), and `sale_clock`: the clock this process decides by, which
   * differs while it refuses to follow a jump of its source or waits for a source that stepped back.
   */
  againstMs: Record<string, number>
}

/** A clock read at a monotonic instant, kept as its offset from the monotonic clock. */
interface Reading { offset: number, at: number }

/** An answer slower than this says too little about when Redis read its clock. */
const MAX_ROUND_TRIP_MS = 50

/**
 * The sale clock: one clock for every instance (Redis's `TIME`, or this host's clock with
 * CLOCK_SOURCE=local), which opens and closes the sales, and which never runs backwards.
 *
 * Each instance reads its source every second (Redis's time taken at the midpoint of the round
 * trip, so off by at most half of it: well under a millisecond on a LAN) and runs on the
 * monotonic clock from one reading to the next. So instances whose own clocks drift apart still
 * agree on XX:00:00.000, and `now()` never goes back: a reading behind the time already issued
 * holds the clock still until the source catches up.
 *
 * Each reading is compared with the other clocks: this host's (when Redis is the source) and the
 * witnesses (Postgres's). While any two disagree by more than `skewMaxMs`, or the source stepped
 * back further than that, `assertSound()` refuses: no sale is opened, reopened, created or sold in
 * by a clock nobody can vouch for (a failover to a Redis whose clock is off, a host whose clock
 * was stepped). A reading that jumps away from the running clock is not followed until every
 * other clock, read since, agrees with it; meanwhile the clock runs on from the last sound reading.
 */
export class SaleClock {
  readonly #redis: TimeSource | undefined
  readonly #witnesses: Array<[string, Witness]>
  readonly #skewMaxMs: number
  readonly #local: () => number
  readonly #mono: () => number
  /** The offset the clock runs on (now = mono + anchor): the last reading it followed. */
  #anchor: number | null = null
  /** The source's latest reading, followed or not. */
  #source: Reading | null = null
  /** This host's clock, read with each reading of Redis's. */
  #host: Reading | null = null
  readonly #seen = new Map<string, Reading>()
  /** When the source was first read away from the running clock (a jump not followed yet). */
  #jumpSince: number | null = null
  #issued = -Infinity
  #refusing = false
  readonly #inFlight = new Set<string>()

  constructor (options: SaleClockOptions) {
    this.#redis = options.redis
    this.#witnesses = Object.entries(options.witnesses ?? {})
    this.#skewMaxMs = options.skewMaxMs
    this.#local = options.local ?? Date.now
    this.#mono = options.mono ?? (() => performance.now())
  }

  /** Milliseconds since the epoch by the sale clock (whole milliseconds, as the scripts expect); never less than before. */
  readonly now = (): number => {
    const running = Math.floor(this.#anchor === null ? this.#local() : this.#mono() + this.#anchor)
    if (running > this.#issued) this.#issued = running
    return this.#issued
  }

  /** Throws a 503 `clock_skew` while the clocks disagree beyond the bound (see the class). */
  assertSound (): void {
    if (this.#refusing) throw new ServiceUnavailable('clock_skew')
  }

  get skew (): ClockSkew {
    const againstMs: Record<string, number> = {}
    const source = this.#source
    if (source !== null) {
      for (const [name, reading] of this.#others()) againstMs[name] = source.offset - reading.offset
      againstMs.sale_clock = this.#behindSource(source)
    }
    return { refusing: this.#refusing, againstMs }
  }

  /**
   * Reads the source and the witnesses (each skipped while its previous read is still pending, so
   * a hanging Postgres holds up nothing else) and judges them. Resolves true when the source was
   * read (an answer that came too slowly to tell is not used).
   */
  async sync (): Promise<boolean> {
    const [read] = await Promise.all([
      this.#once('source', () => this.#readSource()),
      ...this.#witnesses.map(([name, witness]) => this.#once(name, () => this.#readWitness(name, witness)))
    ])
    return read === true
  }

  async #once<T> (name: string, read: () => Promise<T>): Promise<T | null> {
    if (this.#inFlight.has(name)) return null
    this.#inFlight.add(name)
    try {
      const result = await read()
      this.#judge()
      return result
    } finally {
      this.#inFlight.delete(name)
    }
  }

  async #readSource (): Promise<boolean> {
    if (this.#redis === undefined) {
      const at = this.#mono()
      this.#source = { offset: this.#local() - at, at }
      return true
    }
    const sent = this.#mono()
    const [seconds, micros] = await this.#redis.time()
    const received = this.#mono()
    if (received - sent > MAX_ROUND_TRIP_MS) return false
    const at = (sent + received) / 2
    this.#source = { offset: Number(seconds) * 1000 + Number(micros) / 1000 - at, at }
    this.#host = { offset: this.#local() - this.#mono(), at: received }
    return true
  }

  async #readWitness (name: string, witness: Witness): Promise<void> {
    const sent = this.#mono()
    const ms = await witness()
    const received = this.#mono()
    // A witness is asked through a pool that may queue: a slower answer than this says too little.
    if (received - sent > Math.max(MAX_ROUND_TRIP_MS, this.#skewMaxMs / 2)) return
    const at = (sent + received) / 2
    this.#seen.set(name, { offset: ms - at, at })
  }

  /** The clocks the source is compared with: this host's (when Redis is the source) and the witnesses. */
  #others (): Array<[string, Reading]> {
    const others: Array<[string, Reading]> = this.#host === null ? [] : [['host', this.#host]]
    return [...others, ...this.#seen]
  }

  /** How far the source is ahead of the clock this process decides by, now (negative: behind). */
  #behindSource (source: Reading): number {
    const at = this.#mono()
    const running = this.#anchor === null ? this.#local() : at + this.#anchor
    return at + source.offset - Math.max(running, this.#issued)
  }

  /** Follows the source's latest reading if it is sound, and decides whether to refuse. */
  #judge (): void {
    const source = this.#source
    if (source === null) return
    const bound = this.#skewMaxMs
    if (bound === 0) {
      this.#anchor = source.offset
      return
    }
    const agrees = (reading: Reading) => Math.abs(source.offset - reading.offset) <= bound
    const others = this.#others()
    if (this.#anchor === null || Math.abs(source.offset - this.#anchor) <= bound) {
      this.#anchor = source.offset
      this.#jumpSince = null
    } else {
      // A jump: followed only once every other clock, read since it began, agrees with it (a
      // host whose clock was stepped along with everything else's). With nothing else to ask,
      // it is followed at once; a step back then holds the clock still (and refuses) until the
      // source catches up with what was already issued.
      this.#jumpSince ??= source.at
      const since = this.#jumpSince
      if (others.every(([, reading]) => reading.at >= since && agrees(reading))) {
        this.#anchor = source.offset
        this.#jumpSince = null
      }
    }
    this.#refusing = others.some(([, reading]) => !agrees(reading)) || Math.abs(this.#behindSource(source)) > bound
  }
}
