import fp from 'fastify-plugin'
import fastifyRedis from '@fastify/redis'
import { Redis } from 'ioredis'
import { defineSaleScripts } from '../src/inventory.js'

/**
 * The hot state: one ioredis client on `fastify.redis` with auto-pipelining (concurrent
 * requests share round trips) and the sale's Lua scripts defined once.
 */
export default fp(async (fastify) => {
  const { config } = fastify
  const client = new Redis(config.REDIS_URL, {
    keyPrefix: config.REDIS_KEY_PREFIX,
    enableAutoPipelining: true,
    commandTimeout: config.REDIS_COMMAND_TIMEOUT_MS,
    // Fail a command fast while Redis is away instead of queueing it behind reconnects.
    maxRetriesPerRequest: 1,
    connectionName: 'flash-sale',
    lazyConnect: true
  })
  client.on('error', (err) => fastify.log.warn({ err }, 'redis connection error'))
  await client.connect()
  defineSaleScripts(client)
  // We own the client so shutdown works while Redis is down (QUIT on a dead link would throw).
  await fastify.register(fastifyRedis, { client, closeClient: false })
  fastify.addHook('onClose', async () => {
    await client.quit().catch(() => client.disconnect())
  })
}, { name: 'redis', dependencies: ['config'] })
