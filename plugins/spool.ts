import { join } from 'node:path'
import fp from 'fastify-plugin'
import { Counter, Gauge } from 'prom-client'
import { AttemptSpool, type SpoolEvent } from '../src/db/attempt-spool.js'
import type { CheckoutAttempt } from '../src/sale/record-writers.js'
import { METRICS_PREFIX } from '../src/http/metrics.js'

const SPOOL_EVENTS: SpoolEvent[] = ['spooled', 'replayed', 'dropped', 'quarantined']

/** Attempts the spool could not take are logged as one line per this interval (not one per attempt). */
const DROP_LOG_INTERVAL_MS = 1000

declare module 'fastify' {
  interface FastifyInstance {
    attemptSpool: AttemptSpool<CheckoutAttempt>
  }
}

const nullOrString = (value: unknown): boolean => value === null || typeof value === 'string'
const nullOrNumber = (value: unknown): boolean => value === null || typeof value === 'number'

/** A line read back from the spool is a checkout attempt (anything else, `null` included, is quarantined). */
export function isCheckoutAttempt (value: unknown): value is CheckoutAttempt {
  if (typeof value !== 'object' || value === null) return false
  const a = value as Record<string, unknown>
  return typeof a.attemptId === 'string' && typeof a.outcome === 'string' && typeof a.attemptedAt === 'number' &&
    nullOrNumber(a.saleId) && nullOrNumber(a.saleStartsAt) && nullOrString(a.userId) &&
    nullOrNumber(a.itemId) && nullOrString(a.code) && nullOrNumber(a.expiresAt)
}

/**
 * The instance's attempt spool on `fastify.attemptSpool` (SPOOL_DIR/<schema>, bounded by
 * SPOOL_MAX_BYTES), with its metrics: `flash_sale_spool_bytes` (not replayed yet),
 * `flash_sale_spool_attempts_total{event}` (spooled; replayed; dropped: refused by a full spool or
 * not taken by its disk, so unrecorded; quarantined: malformed lines moved aside) and
 * `flash_sale_spool_ok` (0 from a dropped attempt until a write succeeds or a replay frees room).
 * Dropped attempts are logged, with their exact count, once a second while it lasts; quarantined
 * lines once per segment. The sales plugin appends to it and replays it.
 */
export default fp(async (fastify) => {
  const { config, log, metrics } = fastify
  const records = new Counter({
    name: `${METRICS_PREFIX}spool_attempts_total`,
    help: 'Checkout attempts answered 503 without a committed row: spooled to disk, replayed into Postgres later, dropped (a full spool or a failed write: unrecorded), or quarantined (malformed on replay)',
    labelNames: ['event'],
    registers: [metrics.registry]
  })
  for (const event of SPOOL_EVENTS) records.inc({ event }, 0)
  const dir = join(config.SPOOL_DIR, config.DATABASE_SCHEMA)

  // Drops come in floods (every 503 of an outage): summed, and said once per interval.
  let unlogged = 0
  let cause = ''
  let dropLog: NodeJS.Timeout | null = null
  const logDrops = () => {
    if (dropLog !== null) clearTimeout(dropLog)
    dropLog = null
    if (unlogged === 0) return
    log.error({ dir, unrecorded: unlogged, unrecordedTotal: spool.stats.dropped, cause },
      `${unlogged} checkout attempts answered 503 went unrecorded: the attempt spool did not take them (${cause})`)
    unlogged = 0
  }

  const spool = await AttemptSpool.open<CheckoutAttempt>({
    dir,
    maxBytes: config.SPOOL_MAX_BYTES,
    isRecord: isCheckoutAttempt,
    onFullChange: (full) => full
      ? log.error({ dir, maxBytes: config.SPOOL_MAX_BYTES }, 'attempt spool full: checkout attempts answered 503 go unrecorded until Postgres takes the spool back')
      : log.warn({ dir }, 'attempt spool has room again'),
    onRecords: (event, n, why) => {
      records.inc({ event }, n)
      if (event !== 'dropped') return
      unlogged += n
      cause = why instanceof Error ? why.message : String(why)
      dropLog ??= setTimeout(logDrops, DROP_LOG_INTERVAL_MS).unref()
    },
    onQuarantine: ({ file, lines, replayed }) => log.error({ file, lines, quarantined: lines.length, replayed },
      `${lines.length} malformed lines of an attempt spool segment moved aside unreplayed (the segment's ${replayed} other records were replayed)`)
  })
  // eslint-disable-next-line no-new -- lives in the app's registry, read at scrape time
  new Gauge({
    name: `${METRICS_PREFIX}spool_bytes`,
    help: 'Bytes of spooled checkout attempts not replayed into Postgres yet',
    registers: [metrics.registry],
    collect () { this.set(spool.bytes) }
  })
  // eslint-disable-next-line no-new -- lives in the app's registry, read at scrape time
  new Gauge({
    name: `${METRICS_PREFIX}spool_ok`,
    help: '1 while the attempt spool keeps what it is given; 0 from a dropped attempt until a write succeeds or a replay frees room',
    registers: [metrics.registry],
    collect () { this.set(spool.stats.ok ? 1 : 0) }
  })
  fastify.decorate('attemptSpool', spool)
  fastify.addHook('onClose', async () => {
    await spool.close()
    logDrops()
  })
}, { name: 'spool', dependencies: ['config', 'metrics'] })
