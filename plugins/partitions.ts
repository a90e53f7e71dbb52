import fp from 'fastify-plugin'
import { connectDirect } from '../src/db/direct-client.js'
import { PartitionMaintenance } from '../src/db/partitions.js'

declare module 'fastify' {
  interface FastifyInstance {
    partitions: PartitionMaintenance
  }
}

/**
 * Keeps checkout_attempts and purchases partitioned ahead and trimmed behind, on a timer of its
 * own (not the sale roll, not the request path): before the app is ready it creates today's and the
 * next PARTITIONS_AHEAD_DAYS days' partitions, then every PARTITION_MAINTENANCE_INTERVAL_MS it
 * creates the days that came into range and drops the days past ATTEMPTS_RETENTION_DAYS. Every
 * instance runs it; the work is idempotent (src/db/partitions.ts). Days follow the service's clock (`fastify.clock`).
 */
export default fp(async (fastify) => {
  const { config, log, clock } = fastify
  const maintenance = new PartitionMaintenance(() => connectDirect(config, 'flash-sale-partitions'), {
    aheadDays: config.PARTITIONS_AHEAD_DAYS,
    retentionDays: config.ATTEMPTS_RETENTION_DAYS
  })
  fastify.decorate('partitions', maintenance)

  const today = () => new Date(clock.now()).toISOString().slice(0, 10)
  try {
    await maintenance.createAhead(clock.now())
  } catch (err) {
    // Another instance creating the same days may hold the lock past our lock_timeout: fine if today exists.
    const attached = (await maintenance.partitions()).filter((p) => p.day === today() && p.state === 'attached')
    if (attached.length < 2) throw err
    log.warn({ err }, 'creating partitions ahead failed; today\'s exist, retrying on the next run')
  }

  let running: Promise<void> | null = null
  const run = async (): Promise<void> => {
    const created = await maintenance.createAhead(clock.now())
    const dropped = await maintenance.dropExpired(clock.now())
    if (created > 0 || dropped.length > 0) log.info({ created, dropped }, 'partition maintenance')
  }
  const tick = () => {
    running ??= run()
      .catch((err: unknown) => log.warn({ err }, 'partition maintenance failed; retrying on the next run'))
      .finally(() => { running = null })
  }
  // Retention's first pass right after start-up, off the start-up path.
  const first = setTimeout(tick, 0)
  const timer = setInterval(tick, config.PARTITION_MAINTENANCE_INTERVAL_MS)
  first.unref()
  timer.unref()
  fastify.addHook('onClose', async () => {
    clearTimeout(first)
    clearInterval(timer)
    await running
  })
}, { name: 'partitions', dependencies: ['config', 'postgres', 'clock'] })
