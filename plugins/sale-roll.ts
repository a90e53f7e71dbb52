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
  await sales.prepareAhead()
  const task = cron.schedule('* * * * * *', tick, { timezone: 'UTC', noOverlap: true, name: 'sale-prepare' })
  fastify.addHook('onClose', async () => {
    await task.destroy()
  })
}, { name: 'sale-roll', dependencies: ['sales'] })
