import fp from 'fastify-plugin'
import fastifyRateLimit, { normalizeIP } from '@fastify/rate-limit'
import type { FastifyRequest } from 'fastify'
import { RateLimited } from '../src/errors.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** onRequest hook of POST /checkout: the per-user and per-IP abuse limits. */
    checkoutRateLimit: (request: FastifyRequest) => Promise<void>
  }
}

/** Same rule as the checkout schema's `user_id`: anything else is a 400 and gets no bucket. */
const USER_ID = /^[A-Za-z0-9._:@-]{1,64}$/

/**
 * Abuse limits, counted in Redis (`fastify.redis`, so every instance shares them and the key
 * prefix isolates tests) by @fastify/rate-limit's fixed-window script. Nothing is limited
 * globally; POST /checkout opts in with `onRequest: fastify.checkoutRateLimit`, which checks the
 * user's bucket and the client IP's bucket concurrently (one pipelined round trip, before the
 * body is read and before any attempt row is written). A limit of 0 is off and costs nothing.
 * While Redis is known down (plugins/redis.ts's readiness gate) the limiter is not asked; if a
 * Redis call fails anyway, it lets the request through (`skipOnError`): the handler then answers
 * for the outage (503), never the limiter (500).
 */
export default fp(async (fastify) => {
  const { config } = fastify
  const windowMs = config.RATE_LIMIT_WINDOW_MS

  await fastify.register(fastifyRateLimit, {
    global: false,
    redis: fastify.redis,
    nameSpace: 'rate-limit:',
    timeWindow: windowMs,
    skipOnError: true,
    // Only for routes that would use `config.rateLimit`; keeps the plugin's answer our shape.
    errorResponseBuilder: (_request, context) =>
      new RateLimited(`Too many requests; retry in ${context.after}.`, Math.max(1, Math.ceil(context.ttl / 1000)))
  })

  const perUser = config.RATE_LIMIT_PER_USER > 0
    ? fastify.createRateLimit({
      max: config.RATE_LIMIT_PER_USER,
      keyGenerator: (request) => `user:${(request.query as { user_id: string }).user_id}`
    })
    : null
  const perIp = config.RATE_LIMIT_PER_IP > 0
    ? fastify.createRateLimit({
      max: config.RATE_LIMIT_PER_IP,
      // IPv4-mapped IPv6 as IPv4, IPv6 by /64 (one subscriber's allocation), as the plugin does.
      keyGenerator: (request) => `ip:${normalizeIP(request.ip)}`
    })
    : null

  fastify.decorate('checkoutRateLimit', async (request: FastifyRequest) => {
    // Redis is known down: the handler answers 503 at once; asking the limiter would only wait.
    if (fastify.redisReadiness.down) return
    const userId = (request.query as Record<string, unknown>).user_id
    const [user, ip] = await Promise.all([
      perUser !== null && typeof userId === 'string' && USER_ID.test(userId) ? perUser(request) : null,
      perIp !== null ? perIp(request) : null
    ])
    const userOver = user !== null && !user.isAllowed && user.isExceeded
    const ipOver = ip !== null && !ip.isAllowed && ip.isExceeded
    if (!userOver && !ipOver) return
    const retryAfter = Math.max(1,
      userOver ? user.ttlInSeconds : 0,
      ipOver ? ip.ttlInSeconds : 0)
    const who = userOver ? 'this user' : 'this address'
    throw new RateLimited(`Too many checkout attempts from ${who}; retry in ${retryAfter} s.`, retryAfter)
  })
}, { name: 'rate-limit', dependencies: ['config', 'errors', 'redis'] })
