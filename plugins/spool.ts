import { join } from 'node:path'
import fp from 'fastify-plugin'
import { Counter, Gauge } from 'prom-client'
import { AttemptSpool, type SpoolEvent } from '../src/db/attempt-spool.js'
import type { CheckoutAttempt } from '../src/sale/record-writers.js'
import { METRICS_PREFIX } from './metrics.js'

const SPOOL_EVENTS: SpoolEvent[] = ['spooled', 'replayed', 'dropped']

declare module 'fastify' {
  interface FastifyInstance {
    attemptSpool: AttemptSpool<CheckoutAttempt>
  }
}

/**
 * The instance's attempt spool on `fastify.attemptSpool` (SPOOL_DIR/<schema>, bounded by
 * SPOOL_MAX_BYTES), with its metrics: `flash_sale_spool_bytes` (not replayed yet) and
 * `flash_sale_spool_attempts_total{event}` (spooled, replayed, dropped: refused by a full spool).
 * The sales plugin appends to it and replays it.
 */
export default fp(async (fastify) => {
  const { config, log, metrics } = fastify
  const records = new Counter({
    name: `${METRICS_PREFIX}spool_attempts_total`,
    help: 'Checkout attempts answered 503 without a committed row: spooled to disk, replayed into Postgres later, or dropped by a full spool',
    labelNames: ['event'],
    registers: [metrics.registry]
  })
  for (const event of SPOOL_EVENTS) records.inc({ event }, 0)
  const dir = join(config.SPOOL_DIR, config.DATABASE_SCHEMA)
  const spool = await AttemptSpool.open<CheckoutAttempt>({
    dir,
    maxBytes: config.SPOOL_MAX_BYTES,
    onFullChange: (full) => full
      ? log.error({ dir, maxBytes: config.SPOOL_MAX_BYTES }, 'attempt spool full: checkout attempts answered 503 go unrecorded until Postgres takes the spool back')
      : log.warn({ dir }, 'attempt spool has room again'),
    onRecords: (event, n) => records.inc({ event }, n)
  })
  // eslint-disable-next-line no-new -- lives in the app's registry, read at scrape time
  new Gauge({
    name: `${METRICS_PREFIX}spool_bytes`,
    help: 'Bytes of spooled checkout attempts not replayed into Postgres yet',
    registers: [metrics.registry],
    collect () { this.set(spool.bytes) }
  })
  fastify.decorate('attemptSpool', spool)
  fastify.addHook('onClose', () => spool.close())
}, { name: 'spool', dependencies: ['config', 'metrics'] })
