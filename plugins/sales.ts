import fp from 'fastify-plugin'
import { BatchWriter } from '../src/batch-writer.js'
import { Inventory } from '../src/inventory.js'
import { checkoutAttemptWriter, purchaseWriter, type CheckoutAttempt, type PurchaseRecord } from '../src/records.js'
import { SaleRepository } from '../src/sale-repository.js'
import { SaleService } from '../src/sale-service.js'

declare module 'fastify' {
  interface FastifyInstance {
    sales: SaleService
    checkoutLog: BatchWriter<CheckoutAttempt>
    purchaseLog: BatchWriter<PurchaseRecord, number>
  }
}

export interface SalesPluginOptions {
  /** The clock; tests inject one to cross hour boundaries without waiting. */
  now?: () => number
}

/** Wires the sale service (Redis decides, Postgres records) and sweeps expired holds. */
export default fp<SalesPluginOptions>(async (fastify, opts) => {
  const { config, log } = fastify
  const pool = fastify.pg.pool
  const batching = {
    maxRows: config.BATCH_MAX_ROWS,
    windowMs: config.BATCH_WINDOW_MS,
    maxQueue: config.BATCH_MAX_QUEUE,
    maxInflight: config.BATCH_MAX_INFLIGHT
  }
  const onFlush = (name: string) => ({ rows, error }: { rows: number, error?: unknown }) => {
    if (error !== undefined) log.error({ err: error, rows }, `${name} batch failed`)
  }
  const checkoutLog = new BatchWriter<CheckoutAttempt>({ ...batching, write: checkoutAttemptWriter(pool), onFlush: onFlush('checkout attempt') })
  const purchaseLog = new BatchWriter<PurchaseRecord, number>({ ...batching, write: purchaseWriter(pool), onFlush: onFlush('purchase') })

  const sales = new SaleService({
    rules: {
      itemCount: config.SALE_ITEMS,
      userLimit: config.USER_LIMIT,
      checkoutTtlMs: config.CHECKOUT_TTL_SECONDS * 1000
    },
    now: opts.now ?? Date.now,
    repository: new SaleRepository(pool),
    inventory: new Inventory(fastify.redis),
    checkoutLog,
    purchaseLog,
    log
  })
  fastify.decorate('sales', sales)
  fastify.decorate('checkoutLog', checkoutLog)
  fastify.decorate('purchaseLog', purchaseLog)

  // A reconnect may mean a restarted, empty Redis: restore the current sale before it is needed.
  const onRedisReady = () => {
    sales.restoreCurrentSale().catch((err: unknown) => log.warn({ err }, 'restoring the sale after a Redis reconnect failed'))
  }
  fastify.redis.on('ready', onRedisReady)

  const sweeper = setInterval(() => {
    sales.releaseExpired().catch((err: unknown) => log.warn({ err }, 'releasing expired reservations failed'))
  }, config.RELEASE_INTERVAL_MS)
  sweeper.unref()

  // Runs before the pools close (plugins close in reverse order): accepted rows are written, not dropped.
  fastify.addHook('onClose', async () => {
    clearInterval(sweeper)
    fastify.redis.off('ready', onRedisReady)
    await Promise.all([checkoutLog.close(), purchaseLog.close()])
  })
}, { name: 'sales', dependencies: ['config', 'postgres', 'redis'] })
