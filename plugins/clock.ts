import fp from 'fastify-plugin'
import type { Pool } from 'pg'
import { SaleClock, type ClockSkew, type Witness } from '../src/redis/clock.js'

/** The sale clock as the rest of the service sees it. */
export interface ServiceClock {
  /** Milliseconds since the epoch: the time every decision is made at; never less than before. */
  now: () => number
  /** Throws a 503 `clock_skew` while the clocks disagree beyond CLOCK_SKEW_MAX_MS. */
  assertSound: () => void
  /** The last comparison of the clocks; null for an injected clock. */
  readonly skew: ClockSkew | null
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The service's clock: Redis's (or this host's), monotonic, checked against the others (src/redis/clock.ts). */
    clock: ServiceClock
  }
}

export interface ClockPluginOptions {
  /** A clock to use instead, unchecked; tests inject one to cross hour boundaries without waiting. */
  now?: () => number
  /** A sale clock to use instead of the configured one (tests drive its sources); synced like it. */
  clock?: SaleClock
}

/** How often each instance reads its source and the other clocks again. */
const SYNC_MS = 1000
const START_TRIES = 5

/** Postgres's clock (`clock_timestamp()`, the time of the reading, not of the transaction's start). */
export const postgresClock = (pool: Pool): Witness => async () => {
  const { rows: [row] } = await pool.query<{ ms: number }>('SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS ms')
  if (row === undefined) throw new Error('Postgres returned no time')
  return row.ms
}

/** Decorates `fastify.clock`: the time every decision is made at. */
export default fp<ClockPluginOptions>(async (fastify, opts) => {
  const { config, log } = fastify
  if (opts.now !== undefined) {
    fastify.decorate('clock', { now: opts.now, assertSound: () => {}, skew: null })
    return
  }
  const clock = opts.clock ?? new SaleClock({
    redis: config.CLOCK_SOURCE === 'redis' ? fastify.redis : undefined,
    witnesses: { postgres: postgresClock(fastify.pg.pool) },
    skewMaxMs: config.CLOCK_SKEW_MAX_MS
  })
  // Logged when the verdict changes, not every second.
  let refusing = false
  const report = () => {
    const { refusing: now, againstMs } = clock.skew
    if (now === refusing) return
    refusing = now
    const skewSeconds = Object.fromEntries(Object.entries(againstMs).map(([name, ms]) => [name, Math.round(ms) / 1000]))
    if (now) log.error({ skewSeconds, maxSeconds: config.CLOCK_SKEW_MAX_MS / 1000 }, 'the clocks disagree beyond CLOCK_SKEW_MAX_MS: sale decisions are refused (503 clock_skew)')
    else log.info({ skewSeconds }, 'the clocks agree again: sale decisions resume')
  }
  // Before the first sale decision: a few tries, since a start-up under load may answer slowly.
  for (let tries = 0; tries < START_TRIES; tries++) {
    if (await clock.sync().catch(() => false)) break
  }
  report()
  const timer = setInterval(() => {
    clock.sync()
      .catch((err: unknown) => log.debug({ err }, 'reading a clock failed; the last readings stand'))
      .finally(report)
  }, SYNC_MS)
  timer.unref()
  fastify.addHook('onClose', async () => clearInterval(timer))
  fastify.decorate('clock', clock)
}, { name: 'clock', dependencies: ['config', 'postgres', 'redis'] })
