import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { purchaseSchema, type PurchaseBodyT } from '../schemas/purchase.js'
import { InvalidRequest } from '../src/sale/errors.js'
import { isoTime, presentItem, toPrice } from '../src/http/presenters.js'

const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/purchase', { schema: purchaseSchema }, async (request) => {
    const fromQuery = request.query.code
    const fromBody = (request.body as PurchaseBodyT | undefined)?.checkout_code
    if ((fromQuery === undefined) === (fromBody === undefined)) {
      throw new InvalidRequest('give the checkout code once: as `?code=` or as the JSON body `{"checkout_code": ...}`')
    }
    const purchase = await fastify.sales.purchase((fromQuery ?? fromBody) as string)
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
