import fp from 'fastify-plugin'
import { BatchWriter } from '../src/db/batch-writer.js'
import { clientQueryTimeoutMs } from './postgres.js'
import { Inventory } from '../src/sale/inventory.js'
import { checkoutAttemptWriter, purchaseWriter, unavailableAttemptWriter, type CheckoutAttempt, type PurchaseRecord } from '../src/sale/record-writers.js'
import { SaleRepository } from '../src/sale/repository.js'
import { SaleService } from '../src/sale/service.js'
import type { FlushInfo, WriterName } from './metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    sales: SaleService
    checkoutLog: BatchWriter<CheckoutAttempt>
    purchaseLog: BatchWriter<PurchaseRecord, number | null>
  }
}

const SPOOL_REPLAY_INTERVAL_MS = 1000
/** How often purchases given up on while Postgres could not be asked are tried again (nothing to do: no query). */
const SETTLE_INTERVAL_MS = 250
const ABANDONED_SETTLE_INTERVAL_MS = 1000

/** Wires the sale service (Redis decides, Postgres records) and sweeps expired holds. */
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
  const checkoutLog = new BatchWriter<CheckoutAttempt>({ ...batching, write: metrics.countCommittedAttempts(checkoutAttemptWriter(pool)), onFlush: onFlush('checkout attempt', 'checkout_attempts') })
  const writeUnavailable = metrics.countCommittedAttempts(unavailableAttemptWriter(pool))
  const purchaseLog = new BatchWriter<PurchaseRecord, number | null>({ ...batching, write: metrics.countCommittedPurchases(purchaseWriter(pool)), onFlush: onFlush('purchase', 'purchases') })

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
    checkoutLog,
    spool: fastify.attemptSpool,
    writeUnavailable: (attempts) => writeUnavailable(attempts.map((a) => ({ ...a, outcome: 'service_unavailable' }))),
    purchaseLog,
    redisReadiness: fastify.redisReadiness,
    clockCheck: fastify.clock,
    log
  })
  fastify.decorate('sales', sales)
  fastify.decorate('checkoutLog', checkoutLog)
  fastify.decorate('purchaseLog', purchaseLog)

  // A reconnect may mean a restarted, empty Redis: restore the prepared sales before they are needed.
  const onRedisReady = () => {
    sales.restorePreparedSales().catch((err: unknown) => log.warn({ err }, 'restoring the sales after a Redis reconnect failed'))
  }
  fastify.redis.on('ready', onRedisReady)

  const sweeper = setInterval(() => {
    sales.releaseExpired().catch((err: unknown) => log.warn({ err }, 'releasing expired reservations failed'))
  }, config.RELEASE_INTERVAL_MS)
  sweeper.unref()

  // Each second: the offset to Redis's clock again, and the undo of Redis decisions this instance
  // answered 503 for (a stall) until Redis has answered it. One of each at a time: a hanging Redis
  // must not pile them up.
  let undoing = false
  const undoer = setInterval(() => {
    if (undoing) return
    undoing = true
    Promise.all([
      inventory.syncClock().catch((err: unknown) => log.debug({ err }, 'reading Redis\'s clock failed; the last offset stands')),
      sales.settleAbandoned().catch((err: unknown) => log.debug({ err }, 'undoing abandoned Redis decisions failed; retrying'))
    ]).finally(() => { undoing = false })
  }, ABANDONED_SETTLE_INTERVAL_MS)
  undoer.unref()

  // A purchase normally commits within one pool connect plus one query, or fails and is put back;
  // twice that is the grace before an item Redis sold without a Postgres record is suspected to be
  // a crashed instance's. Safety does not rest on it: the void goes through Postgres's fence.
  const settleMs = 2 * (config.PG_CONNECT_TIMEOUT_MS + clientQueryTimeoutMs(config))
  let reconciling = false
  const reconciler = setInterval(() => {
    if (reconciling) return // a slow pass (Postgres waiting on a commit) is never overlapped
    reconciling = true
    sales.reconcilePurchases(settleMs)
      .catch((err: unknown) => log.warn({ err }, 'reconciling purchases with Postgres failed'))
      .finally(() => { reconciling = false })
  }, settleMs / 4)
  reconciler.unref()

  // A purchase whose outcome was lost with its connection is settled as soon as Postgres answers
  // again (the buyer's retry waits for that): within SETTLE_INTERVAL_MS, not the reconciler's settleMs.
  let settling = false
  const settler = setInterval(() => {
    if (settling) return
    settling = true
    sales.settleUnresolved()
      .catch((err: unknown) => log.warn({ err }, 'settling purchases given up on failed'))
      .finally(() => { settling = false })
  }, SETTLE_INTERVAL_MS)
  settler.unref()

  // The spool goes back into Postgres as soon as it answers: tried every second while it holds
  // anything, and now and then for segments a dead process left in the same directory.
  const spool = fastify.attemptSpool
  const replaySpool = () => spool.replay((attempts) => sales.settleSpooled(attempts))
  let spoolTicks = 0
  const replayer = setInterval(() => {
    if (spool.bytes === 0 && spoolTicks++ % 30 !== 0) return
    replaySpool().catch((err: unknown) => log.warn({ err }, 'replaying the attempt spool failed; retrying'))
  }, SPOOL_REPLAY_INTERVAL_MS)
  replayer.unref()

  // Runs before the pools close (plugins close in reverse order): accepted rows are written, not dropped.
  fastify.addHook('onClose', async () => {
    clearInterval(sweeper)
    clearInterval(undoer)
    clearInterval(reconciler)
    clearInterval(settler)
    clearInterval(replayer)
    fastify.redis.off('ready', onRedisReady)
    await Promise.all([checkoutLog.close(), purchaseLog.close()])
    // Purchases given up on are settled now if Postgres answers; else another instance's reconciler does.
    await sales.settleUnresolved().catch(() => {})
    // Attempts refused during the drain go in now; if Postgres is away they wait on disk for the next start.
    if (spool.bytes > 0) await replaySpool().catch((err: unknown) => log.warn({ err }, 'the attempt spool stays on disk for the next start'))
  })
}, { name: 'sales', dependencies: ['config', 'postgres', 'redis', 'clock', 'metrics', 'spool'] })
