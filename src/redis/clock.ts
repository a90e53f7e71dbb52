/** The part of an ioredis client (standalone, Sentinel or Cluster) the clock reads. */
export interface TimeSource {
  /** `TIME`: seconds and microseconds. */
  time (): Promise<Array<string | number>>
}

/** An answer slower than this says too little about when Redis read its clock. */
const MAX_ROUND_TRIP_MS = 50

/**
 * One clock for every instance: Redis's. Each instance measures how far its own clock is from
 * Redis's `TIME` (taken at the midpoint of the round trip, so off by at most half of it: well
 * under a millisecond on a LAN) and measures again every `syncMs`. The sale opens and closes by
 * this clock, so instances whose own clocks drift apart still agree on XX:00:00.000: none sells
 * an hour another has closed, none calls a new sale's code "sale over". While Redis cannot be
 * asked, the last offset stands.
 */
export class RedisClock {
  readonly #redis: TimeSource
  readonly #local: () => number
  #offsetMs = 0

  constructor (redis: TimeSource, local: () => number = Date.now) {
    this.#redis = redis
    this.#local = local
  }

  /** Milliseconds since the epoch by Redis's clock (whole milliseconds, as the scripts expect). */
  readonly now = (): number => this.#local() + this.#offsetMs

  /**
   * Measures the offset again; keeps the old one when the answer came too slowly to tell.
   * Resolves true when it measured.
   */
  async sync (): Promise<boolean> {
    const sent = this.#local()
    const [seconds, micros] = await this.#redis.time()
    const received = this.#local()
    if (received - sent > MAX_ROUND_TRIP_MS) return false
    this.#offsetMs = Math.round(Number(seconds) * 1000 + Number(micros) / 1000 - (sent + received) / 2)
    return true
  }
}
