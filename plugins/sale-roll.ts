import fp from 'fastify-plugin'
import cron from 'node-cron'

/**
 * Keeps the sales prepared: at start-up and then every second, the current hour's sale and,
 * from SALE_PREPARE_SECONDS before it opens, the next hour's are created in Postgres and seeded
 * in Redis (idempotently, on every instance). The tick only prepares; the sale opens at
 * XX:00:00.000 by the clock inside the decision scripts. So a tick that comes late or never (a
 * process frozen across the hour, a GC pause) delays nothing, and a failed preparation (Postgres
 * down at XX:59) is simply tried again a second later. A request that still finds its hour
 * unprepared prepares it itself (SaleService.currentSale).
 */
export default fp(async (fastify) => {
  const { sales, log } = fastify
  let failing = false
  const tick = async (): Promise<void> => {
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
  // At start-up too a failed preparation is retried by the ticks, not fatal: Postgres answered the
  // start-up checks, so it is slow or locked (another instance frozen mid-preparation), not absent.
  await tick()
  // Missed and overlapped ticks are expected (that is the point of preparing ahead): node-cron's
  // own warnings about them go to our logger at debug, not to the console every second.
  const task = cron.schedule('* * * * * *', tick, {
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
  fastify.addHook('onClose', async () => {
    await task.destroy()
  })
}, { name: 'sale-roll', dependencies: ['sales'] })
