import { Type, type Static } from '@sinclair/typebox'
import { Item, Timestamp, errorResponses } from './common.js'

export const CheckoutCode = Type.String({
  pattern: '^[A-Za-z0-9_-]{22}$',
  description: 'A checkout code from POST /checkout',
  examples: ['q1mHh2p1oN2wq0mVf3c3Zw']
})

export const PurchaseQuery = Type.Object({
  code: Type.Optional(CheckoutCode)
})

export const PurchaseBody = Type.Object({
  checkout_code: CheckoutCode
})

export type PurchaseQueryT = Static<typeof PurchaseQuery>
export type PurchaseBodyT = Static<typeof PurchaseBody>

export const PurchaseResponse = Type.Object({
  purchase_id: Type.Integer(),
  sale_id: Type.Integer(),
  item: Item,
  total_price: Type.Number({ description: 'Amount charged, currency units', examples: [199.99] }),
  purchased_at: Timestamp,
  user_purchases: Type.Integer({ description: 'Items this user has bought in this sale, this one included' })
}, { title: 'PurchaseResponse' })

export const purchaseSchema = {
  summary: 'Redeem a checkout code',
  description: 'Buys the item reserved by a checkout code, given as `?code=` or as a JSON body `{"checkout_code": ...}`.',
  tags: ['sale'],
  querystring: PurchaseQuery,
  // Keyed by media type: a request with no body (the `?code=` shape) has nothing to validate.
  body: { content: { 'application/json': { schema: PurchaseBody } } },
  response: {
    200: PurchaseResponse,
    ...errorResponses(400, 404, 409, 410, 413, 415, 503)
  }
}
