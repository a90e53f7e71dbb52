import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { purchaseSchema, type PurchaseBodyT } from '../schemas/purchase.js'
import { InvalidRequest } from '../src/sale/errors.js'
import { isoTime, presentItem, toPrice } from '../src/http/presenters.js'

const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/purchase', { schema: purchaseSchema }, async (request) => {
    // The query's code wins over a body's (Swagger UI pre-fills the body with the example code).
    const code = request.query.code ?? (request.body as PurchaseBodyT | undefined)?.checkout_code
    if (code === undefined) {
      throw new InvalidRequest('no checkout code: give it as `?code=` or as the JSON body `{"checkout_code": ...}`')
    }
    const purchase = await fastify.sales.purchase(code)
    return {
      purchase_id: purchase.purchaseId,
      sale_id: purchase.sale.id,
      item: presentItem(purchase.item),
      total_price: toPrice(purchase.item.priceCents),
      purchased_at: isoTime(purchase.purchasedAt),
      user_purchases: purchase.userPurchases
    }
  })
}

export default routes
