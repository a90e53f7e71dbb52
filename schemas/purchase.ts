import { Type, type Static } from '@sinclair/typebox'
import {
  BadRequestError, HeadersTooLargeError, InternalError, Item, PayloadTooLargeError, RequestTimeoutError, Timestamp, SaleUnavailableError, UnsupportedMediaTypeError,
  errorResponse, unprocessableError
} from './common.js'

export const CheckoutCode = Type.String({
  pattern: '^[A-Za-z0-9_-]{22}$',
  description: 'A checkout code from POST /checkout',
  'x-error-message': 'must be a checkout code: 22 characters of A-Z a-z 0-9 _ -'
})

// The example code is on the body only. Swagger UI's "Try it out" fills the body with it; a code
// pasted into the query field then wins over that example (see `purchaseSchema`), so either field
// buys without touching the other.
export const PurchaseQuery = Type.Object({
  code: Type.Optional({
    ...CheckoutCode,
    description: 'The checkout code (this shape needs no body). When a JSON body is sent as well, this one is ' +
      'redeemed and the body\'s `checkout_code` is not used (the body must still match its schema).'
  })
})

export const PurchaseBody = Type.Object({
  checkout_code: { ...CheckoutCode, examples: ['q1mHh2p1oN2wq0mVf3c3Zw'], description: 'The checkout code, when the query has no `code`' }
})

export type PurchaseBodyT = Static<typeof PurchaseBody>

export const PurchaseResponse = Type.Object({
  purchase_id: Type.Integer(),
  sale_id: Type.Integer(),
  item: Item,
  total_price: Type.Number({ description: 'Amount charged, currency units', examples: [199.99] }),
  purchased_at: Timestamp,
  user_purchases: Type.Integer({ description: 'Items this user has bought in this sale, this one included' })
}, { title: 'PurchaseResponse', description: 'The item is bought; the purchase is committed in Postgres.' })

export const PurchaseNotFoundError = errorResponse('No such checkout code was ever issued.', ['unknown_code'])
export const PurchaseConflictError = errorResponse(
  'The code was already redeemed (of two racing redemptions, one buys). Once that purchase has committed, ' +
  '`purchase_id` and `purchased_at` name it, so a retry after a lost answer learns the item is bought.',
  ['code_used'],
  {
    fields: {
      purchase_id: Type.Optional({ ...PurchaseResponse.properties.purchase_id, description: 'The purchase this code made' }),
      purchased_at: Type.Optional({ ...Timestamp, description: 'When that purchase was made' })
    }
  })
export const PurchaseGoneError = errorResponse(
  'The code can no longer be redeemed: `code_expired` (past its `expires_at`; its item went back on sale) or ' +
  '`sale_over` (it belongs to an earlier hour\'s sale).',
  ['code_expired', 'sale_over'])

export const PurchaseUnprocessableError = unprocessableError(
  'No checkout code: the query has no `code` and there is no JSON body. (Each is optional on its own; one is needed.)')

export const purchaseSchema = {
  operationId: 'purchase',
  summary: 'Redeem a checkout code',
  description: 'Buys the item reserved by a checkout code from your own POST /checkout, given as `?code=` (with ' +
    'no body, or an empty one) or as a JSON body `{"checkout_code": ...}`. When both are given, the query\'s ' +
    '`code` is the one redeemed. Neither is 422 `invalid_request`; a code that is not 22 characters of ' +
    'base64url, or a body that does not match its schema, is 400 `invalid_request`.',
  tags: ['sale'],
  querystring: PurchaseQuery,
  // Keyed by media type: a request with no body (the `?code=` shape) has nothing to validate.
  body: { content: { 'application/json': { schema: PurchaseBody } } },
  response: {
    200: PurchaseResponse,
    400: BadRequestError,
    404: PurchaseNotFoundError,
    409: PurchaseConflictError,
    410: PurchaseGoneError,
    408: RequestTimeoutError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: PurchaseUnprocessableError,
    431: HeadersTooLargeError,
    500: InternalError,
    503: SaleUnavailableError
  }
}
