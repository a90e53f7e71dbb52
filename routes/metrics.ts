import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { metricsSchema } from '../schemas/metrics.js'

/** GET /metrics: the app's own registry (plugins/metrics.ts) in the Prometheus text format. */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/metrics', { schema: metricsSchema }, async (_request, reply) => {
    const body = await fastify.metrics.metrics()
    return reply.type(fastify.metrics.contentType).header('cache-control', 'no-store').send(body)
  })
}

export default routes
