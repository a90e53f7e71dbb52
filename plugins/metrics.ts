import fp from 'fastify-plugin'
import { AppMetrics, portOf } from '../src/http/metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: AppMetrics
  }
}

/**
 * Prometheus metrics on `fastify.metrics` (rendered by routes/metrics.ts). Registered after the
 * Postgres and Redis plugins (it counts their connection errors) and the clock (its skew), and
 * before the sales plugin (which feeds it from its batch writers' seams); the sale, queue and
 * clock gauges read `fastify.sales` / `fastify.attemptWriter` / `fastify.purchaseWriter` /
 * `fastify.clock` only when scraped.
 */
export default fp(async (fastify) => {
  const { config } = fastify
  const metrics = new AppMetrics({
    ports: { redis: portOf(config.REDIS_URL, 6379), postgres: portOf(config.DATABASE_URL, 5432) },
    summary: async () => fastify.hasDecorator('sales') ? fastify.sales.summary() : null,
    clockSkew: () => fastify.clock.skew,
    queued: () => ({
      checkout_attempts: fastify.hasDecorator('attemptWriter') ? fastify.attemptWriter.queued : 0,
      purchases: fastify.hasDecorator('purchaseWriter') ? fastify.purchaseWriter.queued : 0
    }),
    nextSale: () => {
      const now = fastify.clock.now()
      return { now, prepared: fastify.hasDecorator('sales') && fastify.sales.preparedNextSale(now) !== null }
    }
  })
  fastify.decorate('metrics', metrics)

  // The only per-request work: one observation, timed by Fastify itself (reply.elapsedTime).
  fastify.addHook('onResponse', (request, reply, done) => {
    metrics.observeRequest(request.routeOptions.url, request.method, reply.statusCode, reply.elapsedTime)
    done()
  })
  // Runs for thrown errors only (refusals included: an instanceof check each).
  fastify.addHook('onError', (_request, _reply, error, done) => {
    metrics.requestFailed(error)
    done()
  })

  const onRedisError = () => metrics.dependencyError('redis')
  const onPoolError = () => metrics.dependencyError('postgres')
  fastify.redis.on('error', onRedisError)
  fastify.pg.pool.on('error', onPoolError)
  fastify.addHook('onClose', async () => {
    fastify.redis.off('error', onRedisError)
    fastify.pg.pool.off('error', onPoolError)
  })
}, { name: 'metrics', dependencies: ['config', 'postgres', 'redis', 'clock'] })
