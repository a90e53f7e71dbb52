import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { healthSchema, rootSchema } from '../schemas/ops.js'
import type { SpoolStats } from '../src/db/attempt-spool.js'
import { withDeadline } from '../src/lib/deadline.js'
import { RedisUnavailableError } from '../src/redis/readiness.js'
import { packageInfo } from '../src/package-info.js'
import { isoTime, presentSaleCounts } from '../src/http/presenters.js'
import { saleWindow } from '../src/sale/sale.js'

const PROBE_TIMEOUT_MS = 1000

/** Runs a dependency probe with a deadline, so /health answers even when a dependency hangs. */
async function probe (check: () => Promise<unknown>) {
  const started = performance.now()
  const elapsed = () => Math.round(performance.now() - started)
  try {
    await withDeadline(check(), PROBE_TIMEOUT_MS)
    return { ok: true, latency_ms: elapsed() }
  } catch (err) {
    return { ok: false, latency_ms: elapsed(), error: (err as Error).message }
  }
}

/** The spool's part of /health: shown, never a reason for a 503 (the service answers without it). */
const spoolHealth = (stats: SpoolStats, bytes: number) => ({
  ok: stats.ok,
  bytes,
  dropped: stats.dropped,
  quarantined: stats.quarantined,
  ...(stats.lastError !== null && { error: stats.lastError })
})

const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  const { config } = fastify

  fastify.get('/health', { schema: healthSchema }, async (_request, reply) => {
    const [postgres, redis] = await Promise.all([
      probe(() => fastify.pg.query('SELECT 1')),
      // Known down: say so at once rather than wait for a PING that cannot be answered.
      probe(async () => {
        if (fastify.redisReadiness.down) throw new RedisUnavailableError()
        return fastify.redis.ping()
      })
    ])
    const ok = postgres.ok && redis.ok
    if (!ok) reply.header('retry-after', 1)
    return reply.code(ok ? 200 : 503).send({ status: ok ? 'ok' : 'unavailable', postgres, redis, spool: spoolHealth(fastify.attemptSpool.stats, fastify.attemptSpool.bytes) })
  })

  fastify.get('/', { schema: rootSchema }, async () => {
    const now = fastify.sales.now()
    const summary = await fastify.sales.summary(now)
    const nextOpensAt = saleWindow(now).endsAt
    const next = fastify.sales.preparedNextSale(now)
    return {
      service: packageInfo.name,
      version: packageInfo.version,
      description: `Hourly flash sale: ${config.SALE_ITEMS} items every UTC hour, at most ${config.USER_LIMIT} per user.`,
      now: isoTime(now),
      sale: {
        ...presentSaleCounts(summary),
        user_limit: summary.sale.userLimit,
        checkout_ttl_seconds: config.CHECKOUT_TTL_SECONDS
      },
      next_sale_at: isoTime(nextOpensAt),
      next_sale: {
        id: next?.id ?? null,
        opens_at: isoTime(nextOpensAt),
        opens_in_seconds: Math.ceil((nextOpensAt - now) / 1000),
        prepared: next !== null
      },
      endpoints: {
        'POST /checkout?user_id=U&id=I': 'reserve item I for user U; returns a checkout code',
        'POST /purchase?code=C': 'redeem a checkout code (or JSON body {"checkout_code": C})',
        'GET /health': 'Postgres and Redis health',
        'GET /': 'this description',
        'GET /docs': 'the API (Swagger UI; OpenAPI 3 at /docs/json)',
        'GET /sale': 'the live sale page',
        'GET /metrics': 'Prometheus metrics'
      }
    }
  })
}

export default routes
