import type { LoggerOptions } from 'pino'
import type { Config } from './config.js'
import { redactCheckoutCodes } from './log-redaction.js'

/**
 * Header values that are secrets wherever they appear in a logged request or response
 * (Fastify's request serializer logs no headers today; an `err` or a custom log line may).
 */
export const REDACTED_PATHS = [
  'req.headers.authorization',
  'req.headers["proxy-authorization"]',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
  'headers.authorization',
  'headers["proxy-authorization"]',
  'headers.cookie'
]

/**
 * The service's pino options (pino is the logger Fastify runs; a direct dependency so this
 * configuration is ours and typed): JSON lines on stdout at `LOG_LEVEL`, secret headers
 * replaced by `[redacted]` and checkout codes by the line filter of src/log-redaction.ts.
 * `npm run dev` pipes the same lines through pino-pretty.
 */
export function loggerOptions (config: Pick<Config, 'LOG_LEVEL'>): LoggerOptions {
  return {
    level: config.LOG_LEVEL,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    hooks: { streamWrite: redactCheckoutCodes }
  }
}
