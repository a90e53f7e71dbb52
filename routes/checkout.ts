import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { checkoutSchema } from '../schemas/checkout.js'
import { InvalidRequest } from '../src/errors.js'
import { isoTime, presentItem } from '../src/presenters.js'

const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/checkout', {
    schema: checkoutSchema,
    // Abuse limits (per user, per IP) first: a limited request costs no attempt row.
    onRequest: fastify.checkoutRateLimit,
    // Invalid requests are checkout attempts too: record them before refusing.
    attachValidation: true
  }, async (request) => {
    const query = request.query as Record<string, unknown>
    const itemId = query.id ?? query.item_id
    if (request.validationError !== undefined) {
      await fastify.sales.recordInvalidCheckout(asLoggable(query.user_id), asItemId(itemId))
      throw request.validationError
    }
    // ajv coerces `Infinity` (or `1e400`) to the integer type but skips its range checks for
    // non-finite numbers; such an id would also fail the whole batch of attempt rows it joins.
    if (typeof itemId === 'number' && !Number.isFinite(itemId)) {
      await fastify.sales.recordInvalidCheckout(asLoggable(query.user_id), null)
      throw new InvalidRequest('querystring/id must be an integer from 1 to 2147483647')
    }
    if (itemId === undefined || (query.id !== undefined && query.item_id !== undefined && query.id !== query.item_id)) {
      await fastify.sales.recordInvalidCheckout(asLoggable(query.user_id), asItemId(itemId))
      throw new InvalidRequest('querystring must name the item once: `id` or `item_id`')
    }
    const reservation = await fastify.sales.checkout(request.query.user_id, itemId as number)
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
const asItemId = (value: unknown): number | null => {
  const n = Number(value)
  return Number.isInteger(n) && n >= -2_147_483_648 && n <= 2_147_483_647 ? n : null
}

export default routes
