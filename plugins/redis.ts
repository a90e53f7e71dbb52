import fp from 'fastify-plugin'
import fastifyRedis from '@fastify/redis'
import { defineSaleScripts } from '../src/sale/inventory.js'
import { createRedisClient } from '../src/redis/client.js'
import { RedisReadiness } from '../src/redis/readiness.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Whether Redis is known down right now (src/redis/readiness.ts): requests then answer 503 at once. */
    redisReadiness: RedisReadiness
  }
}

/** Heartbeat of the readiness gate: how soon a hanging Redis (or its return) is noticed, besides the command timeout. */
const HEARTBEAT_MS = 250
/** Longest pause between reconnect attempts: Redis's return is noticed within this. */
const MAX_RECONNECT_DELAY_MS = 500

/**
 * The hot state: one ioredis client on `fastify.redis` (single server, Sentinel or Cluster, as
 * configured: src/redis/client.ts) with auto-pipelining (concurrent requests share round trips)
 * and the sale's Lua scripts defined once.
 */
export default fp(async (fastify) => {
  const { config } = fastify
  const client = createRedisClient(config, {
    keyPrefix: config.REDIS_KEY_PREFIX,
    enableAutoPipelining: true,
    commandTimeout: config.REDIS_COMMAND_TIMEOUT_MS,
    // While Redis is away a command fails at once (the request answers 503) instead of waiting in a
    // queue for a reconnect: no offline queue, and commands in flight when the link drops are failed
    // at the drop, not resent after it (their outcome is unknown either way).
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: (attempt) => Math.min(attempt * 50, MAX_RECONNECT_DELAY_MS),
    connectionName: 'flash-sale',
    lazyConnect: true
  })
  client.on('error', (err) => fastify.log.warn({ err }, 'redis connection error'))
  await client.connect()
  defineSaleScripts(client)
  fastify.decorate('redisReadiness', new RedisReadiness(client, HEARTBEAT_MS))
  // We own the client so shutdown works while Redis is down (QUIT on a dead link would throw).
  await fastify.register(fastifyRedis, { client, closeClient: false })
  fastify.addHook('onClose', async () => {
    fastify.redisReadiness.close()
    await client.quit().catch(() => client.disconnect())
  })
}, { name: 'redis', dependencies: ['config'] })
