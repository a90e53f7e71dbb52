import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { sendError } from '../../plugins/errors.js'
import { ID_PATTERN } from '../../schemas/common.js'
import { InvalidRequest, RateLimited, ServiceUnavailable } from '../sale/errors.js'

/** What the checkout route needs of the sale service to record a refused request. */
interface AttemptRecorder {
  recordRefusedCheckout (userId: string | null, itemId: number | null, outcome?: 'invalid_request' | 'service_unavailable'): Promise<void>
}

/**
 * "Every checkout request read is a row", for the requests the sale service never sees: invalid
 * ones (recorded, then refused), and those that fail before the handler (an unreadable body:
 * invalid JSON, 413, 415, a body cut short; a request refused by the drain). The checkout route
 * spreads `routeOptions` into its options and reads its item through `itemOf`. 429s cost no row:
 * a loop hammering one id is what the abuse limit stops.
 */
export function checkoutAttempts (sales: AttemptRecorder) {
  /** Requests whose attempt row is taken care of: by the handler (whatever happens next) or here. */
  const recorded = new WeakSet<FastifyRequest>()
  /** Records a request refused before the handler; if even that fails, the error to answer instead. */
  const recordUnhandled = async (request: FastifyRequest, outcome: 'invalid_request' | 'service_unavailable'): Promise<unknown> => {
    if (recorded.has(request)) return null
    recorded.add(request)
    const query = request.query as Record<string, unknown>
    return sales.recordRefusedCheckout(asLoggable(query.user_id), asItemId(query.id ?? query.item_id), outcome)
      .then(() => null, (error: unknown) => error)
  }

  return {
    routeOptions: {
      // Invalid requests are checkout attempts too: the handler records them before refusing.
      attachValidation: true,
      // If even the record of a request refused before the handler fails, the answer is the 503
      // (and the spool has the attempt). Synchronous for the common case, a refusal the handler
      // recorded: no promise per refusal.
      errorHandler: (error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
        if (recorded.has(request) || error instanceof RateLimited) return sendError(error, request, reply)
        return recordUnhandled(request, error instanceof ServiceUnavailable ? 'service_unavailable' : 'invalid_request')
          .then((failed) => sendError((failed ?? error) as FastifyError, request, reply))
      },
      // A client that stops sending mid-body and closes: Node answers the parser error itself and the
      // body never completes, so neither the handler nor the error handler would see the request.
      onRequestAbort: async (request: FastifyRequest) => { await recordUnhandled(request, 'invalid_request') }
    },

    /**
     * The item a valid request names (the handler's first step: from here its attempt is the sale
     * service's to record). An invalid request is recorded and refused: a 400 for what the schema
     * refuses, a 422 for the rule between `id` and `item_id` the document cannot state.
     */
    async itemOf (request: FastifyRequest): Promise<number> {
      recorded.add(request)
      const query = request.query as Record<string, unknown>
      const itemId = query.id ?? query.item_id
      if (request.validationError !== undefined) {
        await sales.recordRefusedCheckout(asLoggable(query.user_id), asItemId(itemId))
        throw request.validationError
      }
      if (itemId === undefined || (query.id !== undefined && query.item_id !== undefined && query.id !== query.item_id)) {
        await sales.recordRefusedCheckout(asLoggable(query.user_id), null)
        throw new InvalidRequest(itemId === undefined ? 'querystring must name the item: `id` or `item_id`' : 'querystring/item_id must equal `id` when both are given')
      }
      return Number(itemId)
    }
  }
}

/**
 * What of a rejected user id is worth keeping in the attempt record: bounded, and without NUL,
 * which Postgres text refuses (one such row would otherwise fail its whole batch).
 */
const asLoggable = (value: unknown): string | null => typeof value === 'string' ? value.slice(0, 128).replaceAll('\0', '\uFFFD') : null
/** The item id of a rejected request when it is one (the schema's grammar), else null. */
const asItemId = (value: unknown): number | null => typeof value === 'string' && ITEM_ID.test(value) ? Number(value) : null
const ITEM_ID = new RegExp(ID_PATTERN)
