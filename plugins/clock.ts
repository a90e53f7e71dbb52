import fp from 'fastify-plugin'
import { RedisClock } from '../src/redis/clock.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The service's clock (ms since the epoch): Redis's, shared by every instance (src/redis/clock.ts). */
    clock: { now: () => number }
  }
}

export interface ClockPluginOptions {
  /** A clock to use instead; tests inject one to cross hour boundaries without waiting. */
  now?: () => number
}

/** How often each instance measures its offset to Redis's clock again. */
const SYNC_MS = 1000
const START_TRIES = 5

/** Decorates `fastify.clock`: the time every decision is made at. */
export default fp<ClockPluginOptions>(async (fastify, opts) => {
  if (opts.now !== undefined || fastify.config.CLOCK_SOURCE === 'local') {
    fastify.decorate('clock', { now: opts.now ?? Date.now })
    return
  }
  const clock = new RedisClock(fastify.redis)
  // Before the first sale decision: a few tries, since a start-up under load may answer slowly.
  for (let tries = 0; tries < START_TRIES && !await clock.sync(); tries++);
  const timer = setInterval(() => {
    clock.sync().catch((err: unknown) => fastify.log.debug({ err }, 'reading Redis\'s clock failed; the last offset stands'))
  }, SYNC_MS)
  timer.unref()
  fastify.addHook('onClose', async () => clearInterval(timer))
  fastify.decorate('clock', clock)
}, { name: 'clock', dependencies: ['config', 'redis'] })
