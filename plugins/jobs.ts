import fp from 'fastify-plugin'
import cron from 'node-cron'
import { PeriodicJobs } from '../src/lib/periodic.js'
import { clientQueryTimeoutMs } from './postgres.js'

/** Purchases given up on while Postgres could not be asked are tried again this often (no query while there are none). */
const SETTLE_INTERVAL_MS = 250
const ABANDONED_UNDO_INTERVAL_MS = 1000
const SPOOL_REPLAY_INTERVAL_MS = 1000
/** With nothing spooled here, segments a dead process left in the directory are looked for every this many replay ticks. */
const SPOOL_SCAN_EVERY_TICKS = 30

/**
 * What runs on a timer, all in one place. Every instance runs every job: each is idempotent, and
 * none is the only way its work happens (a request prepares an unprepared hour itself, a checkout
 * sweeps a few expired holds, a buyer's retry waits for its purchase's settlement).
 *
 * - sale roll (node-cron, every second, and once before the app is ready): prepares the current
 *   hour's sale and, SALE_PREPARE_SECONDS ahead, the next; the sale opens by the clock inside the
 *   decision scripts, so a late or missed tick delays nothing.
 * - expired holds back to stock, every RELEASE_INTERVAL_MS.
 * - Redis decisions answered 503 for (a stall) undone until Redis answers, and the offset to
 *   Redis's clock for the decision deadlines measured again, every second.
 * - purchases whose outcome was lost with their connection settled as soon as Postgres answers.
 * - purchases Redis holds but Postgres never recorded (a crashed instance's) given back.
 * - the attempt spool written back into Postgres.
 * - partitions created ahead and dropped past retention, every PARTITION_MAINTENANCE_INTERVAL_MS.
 */
export default fp(async (fastify) => {
  const { config, log, sales, inventory, attemptSpool: spool, partitions, clock } = fastify
  const jobs = new PeriodicJobs(log)

  // Failures of the first preparation are retried by the ticks, not fatal: Postgres answered the
  // start-up checks, so it is slow or locked (another instance frozen mid-preparation), not absent.
  let failing = false
  const roll = async (): Promise<void> => {
    try {
      await sales.prepareAhead()
      if (failing) log.info('sale preparation recovered')
      failing = false
    } catch (err) {
      // Logged once per outage, not every second.
      if (!failing) log.error({ err }, 'preparing the sales failed; retrying every second')
      failing = true
    }
  }
  await roll()
  // Missed and overlapped ticks are expected (that is the point of preparing ahead): node-cron's
  // own warnings about them go to our logger at debug, not to the console every second.
  const saleRoll = cron.schedule('* * * * * *', roll, {
    timezone: 'UTC',
    noOverlap: true,
    name: 'sale-prepare',
    logger: {
      info: (msg) => log.debug(msg),
      warn: (msg) => log.debug(msg),
      error: (msg, err) => log.error({ err }, String(msg)),
      debug: (msg) => log.debug(String(msg))
    }
  })

  jobs.every('releasing expired reservations', config.RELEASE_INTERVAL_MS, () => sales.releaseExpired())
  jobs.every('reading Redis\'s clock', ABANDONED_UNDO_INTERVAL_MS, () => inventory.syncClock(), { failureLevel: 'debug' })
  jobs.every('undoing abandoned Redis decisions', ABANDONED_UNDO_INTERVAL_MS, () => sales.settleAbandoned(), { failureLevel: 'debug' })
  jobs.every('settling purchases given up on', SETTLE_INTERVAL_MS, () => sales.settleUnresolved())
  // A purchase normally commits within one pool connect plus one query, or fails and is put back;
  // twice that is the grace before an item Redis sold without a Postgres record is suspected to be
  // a crashed instance's. Safety does not rest on it: the give-back goes through Postgres's fence.
  const settleMs = 2 * (config.PG_CONNECT_TIMEOUT_MS + clientQueryTimeoutMs(config))
  jobs.every('reconciling purchases with Postgres', settleMs / 4, () => sales.reconcilePurchases(settleMs))
  let spoolTicks = 0
  jobs.every('replaying the attempt spool', SPOOL_REPLAY_INTERVAL_MS, async () => {
    if (spool.bytes === 0 && spoolTicks++ % SPOOL_SCAN_EVERY_TICKS !== 0) return
    await spool.replay((attempts) => sales.settleSpooled(attempts))
  })
  jobs.every('partition maintenance', config.PARTITION_MAINTENANCE_INTERVAL_MS, async () => {
    const created = await partitions.createAhead(clock.now())
    const dropped = await partitions.dropExpired(clock.now())
    if (created > 0 || dropped.length > 0) log.info({ created, dropped }, 'partition maintenance')
  }, { now: true })

  // Before the sales plugin closes (plugins close in reverse order): no job runs while it flushes.
  fastify.addHook('onClose', async () => {
    await saleRoll.destroy()
    await jobs.stop()
  })
}, { name: 'jobs', dependencies: ['config', 'clock', 'sales', 'spool', 'partitions'] })
