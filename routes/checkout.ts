import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyError, FastifyRequest } from 'fastify'
import { sendError } from '../plugins/errors.js'
import { checkoutLinks, checkoutSchema } from '../schemas/checkout.js'
import { ID_PATTERN } from '../schemas/common.js'
import { InvalidRequest, RateLimited, ServiceUnavailable } from '../src/sale/errors.js'
import { isoTime, presentItem } from '../src/http/presenters.js'

const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  /** Requests whose attempt row is taken care of: by the handler (whatever happens next) or below. */
  const recorded = new WeakSet<FastifyRequest>()
  /** Records a request refused before the handler; if even that fails, the error to answer instead. */
  const recordUnhandled = async (request: FastifyRequest, outcome: 'invalid_request' | 'service_unavailable'): Promise<unknown> => {
    if (recorded.has(request)) return null
    recorded.add(request)
    const query = request.query as Record<string, unknown>
    return fastify.sales.recordRefusedCheckout(asLoggable(query.user_id), asItemId(query.id ?? query.item_id), outcome)
      .then(() => null, (error: unknown) => error)
  }

  fastify.post('/checkout', {
    schema: checkoutSchema,
    links: checkoutLinks,
    // The per-IP abuse limit (when on) first: a limited request costs no attempt row. The
    // per-user limit is counted by the checkout decision itself.
    onRequest: fastify.checkoutIpLimit,
    // Invalid requests are checkout attempts too: record them before refusing.
    attachValidation: true,
    // What fails before the handler is an attempt too (the query is known): an unreadable body
    // (invalid JSON, 413, 415, a body cut short of its Content-Length) is recorded as
    // `invalid_request`, a request refused by the drain as `service_unavailable`; then answered as
    // usual. If even that record fails, the answer is the 503 (and the spool has the attempt).
    // (Synchronous for the common case, a refusal the handler recorded: no promise per refusal.)
    errorHandler: (error: FastifyError, request, reply) => {
      if (recorded.has(request) || error instanceof RateLimited) return sendError(error, request, reply)
      return recordUnhandled(request, error instanceof ServiceUnavailable ? 'service_unavailable' : 'invalid_request')
        .then((failed) => sendError((failed ?? error) as FastifyError, request, reply))
    },
    // A client that stops sending mid-body and closes: Node answers the parser error itself and the
    // body never completes, so neither the handler nor the error handler would see the request.
    onRequestAbort: async (request) => { await recordUnhandled(request, 'invalid_request') }
  }, async (request) => {
    recorded.add(request)
    const query = request.query as Record<string, unknown>
    const itemId = query.id ?? query.item_id
    if (request.validationError !== undefined) {
      await fastify.sales.recordRefusedCheckout(asLoggable(query.user_id), asItemId(itemId))
      throw request.validationError
    }
    // The rule between `id` and `item_id` (schemas/checkout.ts): a 422, as the document cannot state it.
    if (itemId === undefined || (query.id !== undefined && query.item_id !== undefined && query.id !== query.item_id)) {
      await fastify.sales.recordRefusedCheckout(asLoggable(query.user_id), null)
      throw new InvalidRequest(itemId === undefined ? 'querystring must name the item: `id` or `item_id`' : 'querystring/item_id must equal `id` when both are given')
    }
    const reservation = await fastify.sales.checkout(request.query.user_id, Number(itemId))
    return {
      code: reservation.code,
      expires_at: isoTime(reservation.expiresAt),
      sale_id: reservation.sale.id,
      item: presentItem(reservation.item)
    }
  })
}

/**
 * What of a rejected user id is worth keeping in the attempt record: bounded, and without NUL,
 * which Postgres text refuses (one such row would otherwise fail its whole batch).
 */
const asLoggable = (value: unknown): string | null => typeof value === 'string' ? value.slice(0, 128).replaceAll('\0', '\uFFFD') : null
/** The item id of a rejected request when it is one (the schema's grammar), else null. */
const asItemId = (value: unknown): number | null => typeof value === 'string' && ITEM_ID.test(value) ? Number(value) : null
const ITEM_ID = new RegExp(ID_PATTERN)

export default routes
