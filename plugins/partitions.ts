import fp from 'fastify-plugin'
import { connectDirect } from '../src/db/direct-client.js'
import { PartitionMaintenance } from '../src/db/partitions.js'

declare module 'fastify' {
  interface FastifyInstance {
    partitions: PartitionMaintenance
  }
}

/**
 * Keeps checkout_attempts and purchases partitioned ahead and trimmed behind: before the app is
 * ready it creates today's and the next PARTITIONS_AHEAD_DAYS days' partitions; then the jobs
 * (plugins/jobs.ts) create the days that come into range and drop the days past
 * ATTEMPTS_RETENTION_DAYS. Idempotent on every instance (src/db/partitions.ts). Days follow the
 * service's clock (`fastify.clock`).
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
}, { name: 'partitions', dependencies: ['config', 'postgres', 'clock'] })
