import Fastify, { LogController, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { Config } from './config.js'
import { loggerOptions } from './logger.js'
import { ajvOptions, formatValidationErrors } from './http/validation.js'
import type { SaleClock } from './redis/clock.js'
import configPlugin from '../plugins/config.js'
import drainPlugin from '../plugins/drain.js'
import emptyBodyPlugin from '../plugins/empty-body.js'
import errorsPlugin, { clientErrorHandler, sendError } from '../plugins/errors.js'
import postgresPlugin from '../plugins/postgres.js'
import redisPlugin from '../plugins/redis.js'
import rateLimitPlugin from '../plugins/rate-limit.js'
import securityPlugin, { setSecurityHeaders } from '../plugins/security.js'
import clockPlugin from '../plugins/clock.js'
import salesPlugin from '../plugins/sales.js'
import spoolPlugin from '../plugins/spool.js'
import jobsPlugin from '../plugins/jobs.js'
import saleFeedPlugin from '../plugins/sale-feed.js'
import partitionsPlugin from '../plugins/partitions.js'
import metricsPlugin from '../plugins/metrics.js'
import openapiPlugin from '../plugins/openapi.js'
import checkoutRoutes from '../routes/checkout.js'
import purchaseRoutes from '../routes/purchase.js'
import opsRoutes from '../routes/ops.js'
import metricsRoutes from '../routes/metrics.js'
import salePageRoutes from '../routes/sale-page.js'

export interface BuildOptions {
  /** Injectable clock (ms since epoch), used as it is; defaults to Redis's clock, shared by every instance. */
  now?: () => number
  /** A sale clock whose sources a test drives, synced and checked like the configured one (plugins/clock.ts). */
  clock?: SaleClock
  /** Extra Fastify options (tests pass `logger: false`). */
  fastify?: FastifyServerOptions
  /** Where log lines go instead of stdout (tests read them). */
  logStream?: { write (line: string): void }
}

/**
 * Builds the application: plugins (one concern each) then routes (thin; rules live in src/).
 * Plugins are registered explicitly rather than autoloaded because the order below is their
 * dependency order (each plugin also names its dependencies, so a wrong order fails at start-up).
 */
export async function buildApp (config: Config, options: BuildOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    // pino options (src/logger.ts: level, redaction of secrets and of checkout codes).
    logger: { ...loggerOptions(config), ...(options.logStream && { stream: options.logStream }) },
    logController: new LogController({ disableRequestLogging: !config.LOG_REQUESTS }),
    bodyLimit: config.BODY_LIMIT_BYTES,
    // request.ip (the per-IP limit) from X-Forwarded-For only behind a proxy we were told to trust.
    trustProxy: config.TRUST_PROXY,
    // Never answer a hanging request forever.
    requestTimeout: 30_000,
    // Requests that arrive while closing get our own 503 (plugins/drain.ts), not Fastify's differently shaped one.
    return503OnClosing: false,
    // Strict grammars, no coercion, messages naming the parameter (src/http/validation.ts).
    ajv: ajvOptions,
    schemaErrorFormatter: formatValidationErrors,
    // What the router refuses before any hook runs (a path like `/%zz`): same shape and headers.
    frameworkErrors: (error, request, reply) => {
      setSecurityHeaders(reply)
      sendError(error, request, reply)
    },
    // What Node's HTTP parser refuses before Fastify sees a request: same shape and headers.
    clientErrorHandler,
    ...options.fastify
  }).withTypeProvider<TypeBoxTypeProvider>()

  await app.register(configPlugin, { config })
  await app.register(errorsPlugin)
  await app.register(emptyBodyPlugin)
  await app.register(securityPlugin)
  // After the security headers (a drain's 503 carries them too).
  await app.register(drainPlugin)
  await app.register(postgresPlugin)
  await app.register(redisPlugin)
  await app.register(clockPlugin, { now: options.now, clock: options.clock })
  await app.register(metricsPlugin)
  await app.register(rateLimitPlugin)
  await app.register(spoolPlugin)
  await app.register(salesPlugin)
  await app.register(partitionsPlugin)
  await app.register(jobsPlugin)
  await app.register(saleFeedPlugin)
  // Before the routes: it collects their schemas as they are added (OpenAPI at /docs/json, Swagger UI at /docs).
  await app.register(openapiPlugin)

  await app.register(opsRoutes)
  await app.register(metricsRoutes)
  await app.register(salePageRoutes)
  await app.register(checkoutRoutes)
  await app.register(purchaseRoutes)
  return app
}
