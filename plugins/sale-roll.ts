import fp from 'fastify-plugin'
import cron from 'node-cron'

/**
 * Rolls the sale at the top of every UTC hour and opens the current hour's sale at start-up,
 * so a server started at 14:37 sells at once. Opening is idempotent (UNIQUE starts_at in
 * Postgres, a seed-once script in Redis), so every instance may run this same cron.
 */
const RETRY_MS = 5000

export default fp(async (fastify) => {
  const { sales, log } = fastify
  let retry: NodeJS.Timeout | undefined
  const roll = async (): Promise<void> => {
    clearTimeout(retry)
    try {
      await sales.openSale()
    } catch (err) {
      log.error({ err }, `sale roll failed; retrying in ${RETRY_MS} ms (checkouts answer no_active_sale meanwhile)`)
      retry = setTimeout(roll, RETRY_MS).unref()
    }
  }
  await sales.openSale()
  const task = cron.schedule('0 * * * *', roll, { timezone: 'UTC', noOverlap: true, name: 'sale-roll' })
  fastify.addHook('onClose', async () => {
    clearTimeout(retry)
    await task.destroy()
  })
}, { name: 'sale-roll', dependencies: ['sales'] })
