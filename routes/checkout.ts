import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { checkoutLinks, checkoutSchema } from '../schemas/checkout.js'
import { checkoutAttempts } from '../src/http/checkout-attempts.js'
import { isoTime, presentItem } from '../src/http/presenters.js'

/** POST /checkout: every request read is an attempt row (src/http/checkout-attempts.ts), then the sale decides. */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  const attempts = checkoutAttempts(fastify.sales)
  fastify.post('/checkout', {
    schema: checkoutSchema,
    links: checkoutLinks,
    // The per-IP abuse limit (when on) first: a limited request costs no attempt row. The
    // per-user limit is counted by the checkout decision itself.
    onRequest: fastify.checkoutIpLimit,
    ...attempts.routeOptions
  }, async (request) => {
    const reservation = await fastify.sales.checkout(request.query.user_id, await attempts.itemOf(request))
    return {
      code: reservation.code,
      expires_at: isoTime(reservation.expiresAt),
      sale_id: reservation.sale.id,
      item: presentItem(reservation.item)
    }
  })
}

export default routes
