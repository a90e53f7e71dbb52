import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import fp from 'fastify-plugin'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { API_SECURITY_HEADERS } from './security.js'
import { InvalidRequest, RateLimited, SaleRefusal, ServiceUnavailable, type RefusalCode } from '../src/sale/errors.js'
import { isoTime } from '../src/http/presenters.js'

/** HTTP status of each business refusal. */
export const REFUSAL_STATUS: Record<RefusalCode, number> = {
  no_active_sale: 409,
  unknown_item: 404,
  sold_out: 409,
  item_sold: 409,
  item_reserved: 409,
  already_reserved_by_you: 409,
  user_limit_reached: 403,
  unknown_code: 404,
  code_expired: 410,
  code_used: 409,
  sale_over: 410
}

/** Fastify's own client errors, renamed to the service's stable codes. */
export const FRAMEWORK_ERRORS: Record<string, string> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'invalid_content_length',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'invalid_json',
  FST_ERR_CTP_INVALID_JSON_BODY: 'invalid_json',
  FST_ERR_VALIDATION: 'invalid_request',
  // Raised by the router itself (see `frameworkErrors` in src/app.ts), e.g. `/%zz`.
  FST_ERR_BAD_URL: 'invalid_url',
  FST_ERR_MAX_PARAM_LENGTH: 'invalid_url'
}

/**
 * Errors of Node's HTTP parser (llhttp `HPE_*` codes) and server timeouts, raised before any
 * Fastify request exists, as status + stable code + message. Anything else unreadable is a 400
 * `bad_request` (bad chunked encoding, Transfer-Encoding with Content-Length, a broken request
 * line, a body cut short).
 */
export const PARSER_ERRORS: Record<string, readonly [number, string, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'headers_too_large', 'The request headers are larger than the server accepts.'],
  HPE_INVALID_CONTENT_LENGTH: [400, 'invalid_content_length', 'Content-Length is not a valid length.'],
  // Node's requestTimeout (src/app.ts), headers included.
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'request_timeout', 'The request was not received in time.']
}
const UNREADABLE = [400, 'bad_request', 'The request could not be read as HTTP/1.1.'] as const

/** The raw HTTP response of a parser error: the API's error shape and security headers, then the socket closes. */
export function clientErrorResponse (code: string | undefined): string {
  const [status, error, message] = (code !== undefined && PARSER_ERRORS[code]) || UNREADABLE
  const body = JSON.stringify({ error, message })
  const headers = API_SECURITY_HEADERS.map(([name, value]) => `${name}: ${value}\r\n`).join('')
  return `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n${headers}content-type: application/json; charset=utf-8\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`
}

/**
 * Fastify's `clientErrorHandler`: Node's HTTP parser refused what a client sent (a bad
 * Content-Length, broken chunked encoding, a header block over the limit, a body cut short).
 * No request object exists, so the answer is written on the socket, which then closes.
 */
export function clientErrorHandler (this: FastifyInstance, err: NodeJS.ErrnoException, socket: Socket): void {
  // A reset socket has nobody to answer; a response already under way cannot be replaced.
  const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage
  if (err.code === 'ECONNRESET' || socket.destroyed || inFlight?.headersSent === true) {
    socket.destroy()
    return
  }
  this.log.debug({ err }, 'unreadable HTTP request')
  if (socket.writable) socket.end(clientErrorResponse(err.code))
  else socket.destroy()
}

/** A refusal's body: its code and message, and what a client needs after a lost answer (see SaleRefusal). */
function refusalBody (error: SaleRefusal): Record<string, unknown> {
  const body: Record<string, unknown> = { error: error.code, message: error.message }
  if (error.hold !== undefined) {
    body.code = error.hold.code
    body.expires_at = isoTime(error.hold.expiresAt)
  }
  if (error.purchase !== undefined) {
    body.purchase_id = error.purchase.purchaseId
    body.purchased_at = isoTime(error.purchase.purchasedAt)
  }
  return body
}

/**
 * One JSON error shape everywhere: `{ error: <stable code>, message: <human text> }` (two refusals
 * add what a retry after a lost answer needs: see refusalBody).
 * Client mistakes are 4xx; a dependency outage is 503 with Retry-After; only a bug is 500.
 */
export function sendError (error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
  if (error instanceof SaleRefusal) {
    if (error.retryAfterSeconds !== undefined) reply.header('retry-after', error.retryAfterSeconds)
    return reply.code(REFUSAL_STATUS[error.code]).send(refusalBody(error))
  }
  if (error instanceof ServiceUnavailable) {
    // Per request only at debug: an outage answers thousands a second. The failures behind them are
    // logged once each where they happen (connection errors, failed batches) and counted in /metrics.
    request.log.debug({ reason: error.reason, err: error.cause }, 'answered 503')
    return reply.code(503).header('retry-after', error.retryAfterSeconds)
      .send({ error: error.errorCode, message: error.message })
  }
  if (error instanceof RateLimited) {
    return reply.code(429).header('retry-after', error.retryAfterSeconds)
      .send({ error: 'rate_limited', message: error.message })
  }
  // 400: the document refuses the request (a schema); 422: it matches the schemas, a rule between parameters refuses it.
  if (error.validation) return reply.code(400).send({ error: 'invalid_request', message: error.message })
  if (error instanceof InvalidRequest) return reply.code(422).send({ error: 'invalid_request', message: error.message })
  const status = error.statusCode ?? 500
  if (status >= 400 && status < 500) {
    const code = (error.code && FRAMEWORK_ERRORS[error.code]) || (error instanceof SyntaxError ? 'invalid_json' : 'bad_request')
    return reply.code(status).send({ error: code, message: error.message })
  }
  request.log.error({ err: error }, 'unhandled error')
  return reply.code(500).send({ error: 'internal_error', message: 'Something went wrong on our side.' })
}

/**
 * The methods each path serves, learnt from the routes as they are added, so that a known path
 * asked with another method is a 405 with `Allow` (RFC 9110) rather than a 404. Paths are matched
 * as the router declares them: static segments, `:param` for one segment, `*` for the rest.
 */
export class RouteMethods {
  private readonly routes: Array<{ pattern: RegExp, methods: Set<string> }> = []

  add (url: string, methods: string | string[]): void {
    const source = url.split('/').map((segment) => segment === '*'
      ? '.*'
      : segment.startsWith(':') ? '[^/]+' : segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('/')
    const pattern = new RegExp(`^${source}$`)
    let route = this.routes.find((r) => r.pattern.source === pattern.source)
    if (route === undefined) this.routes.push(route = { pattern, methods: new Set() })
    for (const method of [methods].flat()) route.methods.add(method)
    // Fastify answers HEAD for every GET route (exposeHeadRoutes).
    if (route.methods.has('GET')) route.methods.add('HEAD')
  }

  /** The methods `path` is served with, in a stable order; empty for an unknown path. */
  allowed (path: string): string[] {
    const methods = new Set(this.routes.filter((r) => r.pattern.test(path)).flatMap((r) => [...r.methods]))
    return [...methods].sort()
  }
}

export default fp(async (fastify) => {
  fastify.setErrorHandler(sendError)

  const routeMethods = new RouteMethods()
  fastify.addHook('onRoute', (route) => { routeMethods.add(route.url, route.method) })

  fastify.setNotFoundHandler((request, reply) => {
    const path = (request.url.split('?')[0] ?? '').slice(0, 200)
    const allowed = routeMethods.allowed(path)
    if (allowed.length > 0) {
      return reply.code(405).header('allow', allowed.join(', '))
        .send({ error: 'method_not_allowed', message: `${request.method} is not allowed on ${path}: use ${allowed.join(' or ')}` })
    }
    return reply.code(404).send({ error: 'not_found', message: `No route for ${request.method} ${path}` })
  })
}, { name: 'errors' })
