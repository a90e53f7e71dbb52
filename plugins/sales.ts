import fp from 'fastify-plugin'
import { BatchWriter } from '../src/db/batch-writer.js'
import { Inventory } from '../src/sale/inventory.js'
import { writeAttempts, writePurchases, writeUnavailableAttempts, type CheckoutAttempt, type PurchaseRecord } from '../src/sale/record-writers.js'
import { SaleRepository } from '../src/sale/repository.js'
import { SaleService } from '../src/sale/service.js'
import type { FlushInfo, WriterName } from '../src/http/metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    sales: SaleService
    /** Redis's side of the sale (its Lua scripts), for the jobs that keep its clock offset. */
    inventory: Inventory
    attemptWriter: BatchWriter<CheckoutAttempt>
    purchaseWriter: BatchWriter<PurchaseRecord, number | null>
  }
}

/** Wires the sale service (Redis decides, Postgres records) and its writers; its periodic jobs are plugins/jobs.ts. */
export default fp(async (fastify) => {
  const { config, log } = fastify
  const pool = fastify.pg.pool
  const batching = {
    maxRows: config.BATCH_MAX_ROWS,
    windowMs: config.BATCH_WINDOW_MS,
    maxQueue: config.BATCH_MAX_QUEUE,
    maxInflight: config.BATCH_MAX_INFLIGHT
  }
  const { metrics } = fastify
  const onFlush = (name: string, writer: WriterName) => (info: FlushInfo) => {
    if (info.error !== undefined) log.error({ err: info.error, rows: info.rows }, `${name} batch failed`)
    metrics.batchFlushed(writer, info)
  }
  // Committed attempt rows are counted by outcome, and inserted purchases, once their batch commits (plugins/metrics.ts).
  const prepared = config.DATABASE_POOL_MODE === 'session'
  const attemptWriter = new BatchWriter<CheckoutAttempt>({ ...batching, write: metrics.countCommittedAttempts(writeAttempts(pool, { prepared })), onFlush: onFlush('checkout attempt', 'checkout_attempts') })
  const writeUnavailable = metrics.countCommittedAttempts(writeUnavailableAttempts(pool))
  const purchaseWriter = new BatchWriter<PurchaseRecord, number | null>({ ...batching, write: metrics.countCommittedPurchases(writePurchases(pool)), onFlush: onFlush('purchase', 'purchases') })

  // Decisions carry a deadline in Redis's clock (src/sale/inventory.ts): measured before the first one.
  const inventory = new Inventory(fastify.redis, { commandTimeoutMs: config.REDIS_COMMAND_TIMEOUT_MS })
  await inventory.syncClock().catch((err: unknown) => log.warn({ err }, 'reading Redis\'s clock failed'))
  const sales = new SaleService({
    rules: {
      itemCount: config.SALE_ITEMS,
      userLimit: config.USER_LIMIT,
      checkoutTtlMs: config.CHECKOUT_TTL_SECONDS * 1000,
      prepareAheadMs: config.SALE_PREPARE_SECONDS * 1000,
      checkoutRateLimit: { max: config.RATE_LIMIT_PER_USER, windowMs: config.RATE_LIMIT_WINDOW_MS }
    },
    now: fastify.clock.now,
    repository: new SaleRepository(pool),
    inventory,
    attemptWriter,
    spool: fastify.attemptSpool,
    writeUnavailable: (attempts) => writeUnavailable(attempts.map((a) => ({ ...a, outcome: 'service_unavailable' }))),
    purchaseWriter,
    redisReadiness: fastify.redisReadiness,
    clockCheck: fastify.clock,
    log
  })
  fastify.decorate('sales', sales)
  fastify.decorate('inventory', inventory)
  fastify.decorate('attemptWriter', attemptWriter)
  fastify.decorate('purchaseWriter', purchaseWriter)

  // A reconnect may mean a restarted, empty Redis: restore the prepared sales before they are needed.
  const onRedisReady = () => {
    sales.restorePreparedSales().catch((err: unknown) => log.warn({ err }, 'restoring the sales after a Redis reconnect failed'))
  }
  fastify.redis.on('ready', onRedisReady)

  // Runs before the pools close (plugins close in reverse order): accepted rows are written, not dropped.
  const spool = fastify.attemptSpool
  fastify.addHook('onClose', async () => {
    fastify.redis.off('ready', onRedisReady)
    await Promise.all([attemptWriter.close(), purchaseWriter.close()])
    // Purchases given up on are settled now if Postgres answers; else another instance's reconciler does.
    await sales.settleUnresolved().catch(() => {})
    // Attempts refused during the drain go in now; if Postgres is away they wait on disk for the next start.
    if (spool.bytes > 0) await spool.replay((attempts) => sales.settleSpooled(attempts)).catch((err: unknown) => log.warn({ err }, 'the attempt spool stays on disk for the next start'))
  })
}, { name: 'sales', dependencies: ['config', 'postgres', 'redis', 'clock', 'metrics', 'spool'] })
