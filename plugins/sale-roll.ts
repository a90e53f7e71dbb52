import fp from 'fastify-plugin'

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
  // A plain timer, not a cron schedule: "every second" needs no calendar, and node-cron matched
  // each tick through Intl.DateTimeFormat, which kept ~4 MB of ICU data resident (and allocated
  // every second in an idle process). A tick still running when the next is due is skipped.
  let running = false
  const timer = setInterval(() => {
    if (running) return
    running = true
    tick().finally(() => { running = false })
  }, 1000)
  fastify.addHook('onClose', async () => {
    clearInterval(timer)
  })
}, { name: 'sale-roll', dependencies: ['sales'] })
