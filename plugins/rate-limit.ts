import fp from 'fastify-plugin'
import fastifyRateLimit, { normalizeIP } from '@fastify/rate-limit'
import type { FastifyRequest } from 'fastify'
import { perIpRateLimit } from '../src/config.js'
import { RateLimited } from '../src/sale/errors.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** onRequest hooks of POST /checkout: the per-IP abuse limit when it is on, else none. */
    checkoutIpLimit: Array<(request: FastifyRequest) => Promise<void>>
  }
}

/**
 * The per-IP abuse limit on POST /checkout, counted in Redis (`fastify.redis`, so every instance
 * shares it and the key prefix isolates tests) by @fastify/rate-limit's fixed-window script,
 * before the body is read and before any attempt row is written. Off by default (see
 * RATE_LIMIT_PER_IP): then no hook runs at all. The per-user limit is not here: the checkout
 * decision counts it in the same Redis call (src/sale/lua/lib/rate-limit.lua).
 * While Redis is known down (plugins/redis.ts's readiness gate) the limiter is not asked; if a
 * Redis call fails anyway, it lets the request through (`skipOnError`): the handler then answers
 * for the outage (503), never the limiter (500).
 */
export default fp(async (fastify) => {
  const { config } = fastify
  const max = perIpRateLimit(config)
  if (max === 0) {
    fastify.decorate('checkoutIpLimit', [])
    return
  }

  await fastify.register(fastifyRateLimit, {
    global: false,
    redis: fastify.redis,
    nameSpace: 'rate-limit:',
    timeWindow: config.RATE_LIMIT_WINDOW_MS,
    skipOnError: true,
    // Only for routes that would use `config.rateLimit`; keeps the plugin's answer our shape.
    errorResponseBuilder: (_request, context) =>
      new RateLimited(`Too many requests; retry in ${context.after}.`, Math.max(1, Math.ceil(context.ttl / 1000)))
  })
  const perIp = fastify.createRateLimit({
    max,
    // IPv4-mapped IPv6 as IPv4, IPv6 by /64 (one subscriber's allocation), as the plugin does.
    keyGenerator: (request) => `ip:${normalizeIP(request.ip)}`
  })

  fastify.decorate('checkoutIpLimit', [async (request: FastifyRequest) => {
    // Redis is known down: the handler answers 503 at once; asking the limiter would only wait.
    if (fastify.redisReadiness.down) return
    const ip = await perIp(request)
    if (ip.isAllowed || !ip.isExceeded) return
    const retryAfter = Math.max(1, ip.ttlInSeconds)
    throw new RateLimited(`Too many checkout attempts from this address; retry in ${retryAfter} s.`, retryAfter)
  }])
}, { name: 'rate-limit', dependencies: ['config', 'errors', 'redis'] })
