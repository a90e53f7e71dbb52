import fp from 'fastify-plugin'
import fastifyRedis from '@fastify/redis'
import { defineSaleScripts } from '../src/inventory.js'

/**
 * The hot state: one ioredis client on `fastify.redis` with auto-pipelining (concurrent
 * requests share round trips) and the sale's Lua scripts defined once.
 */
export default fp(async (fastify) => {
  const { config } = fastify
  await fastify.register(fastifyRedis, {
    url: config.REDIS_URL,
    keyPrefix: config.REDIS_KEY_PREFIX,
    enableAutoPipelining: true,
    commandTimeout: config.REDIS_COMMAND_TIMEOUT_MS,
    // Fail a command fast while Redis is away instead of queueing it behind reconnects.
    maxRetriesPerRequest: 1,
    connectionName: 'flash-sale'
  })
  defineSaleScripts(fastify.redis)
}, { name: 'redis', dependencies: ['config'] })
