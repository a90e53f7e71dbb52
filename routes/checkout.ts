import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { checkoutSchema } from '../schemas/checkout.js'
import { ID_PATTERN } from '../schemas/common.js'
import { InvalidRequest } from '../src/errors.js'
import { isoTime, presentItem } from '../src/presenters.js'

const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/checkout', {
    schema: checkoutSchema,
    // The per-IP abuse limit (when on) first: a limited request costs no attempt row. The
    // per-user limit is counted by the checkout decision itself.
    onRequest: fastify.checkoutIpLimit,
    // Invalid requests are checkout attempts too: record them before refusing.
    attachValidation: true
  }, async (request) => {
    const query = request.query as Record<string, unknown>
    const itemId = query.id ?? query.item_id
    if (request.validationError !== undefined) {
      await fastify.sales.recordInvalidCheckout(asLoggable(query.user_id), asItemId(itemId))
      throw request.validationError
    }
    if (query.id !== undefined && query.item_id !== undefined && query.id !== query.item_id) {
      await fastify.sales.recordInvalidCheckout(asLoggable(query.user_id), null)
      throw new InvalidRequest('querystring/item_id must equal `id` when both are given')
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
