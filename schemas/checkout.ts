import { Type, type Static } from '@sinclair/typebox'
import {
  BadRequestError, HeadersTooLargeError, InternalError, Item, ItemId, PayloadTooLargeError, RequestTimeoutError, RateLimitedError, Timestamp, SaleUnavailableError,
  UnsupportedMediaTypeError, errorResponse
} from './common.js'

export const UserId = Type.String({
  minLength: 1,
  maxLength: 64,
  pattern: '^[A-Za-z0-9._:@-]+$',
  description: 'Caller-chosen user id: 1-64 of A-Z a-z 0-9 . _ : @ -',
  examples: ['user-1234'],
  'x-error-message': 'must be 1-64 characters of A-Z a-z 0-9 . _ : @ -'
})

export const CheckoutQuery = Type.Object({
  user_id: UserId,
  // The example on `id` only: Swagger UI's "Try it out" would otherwise fill in both spellings.
  id: Type.Optional({ ...ItemId, examples: ['42'] }),
  item_id: Type.Optional({ ...ItemId, description: 'Alias of `id` (the seed API spelling)' })
}, {
  // One of the two spellings is required (that both agree is the route's rule: JSON Schema cannot compare them).
  anyOf: [{ required: ['id'] }, { required: ['item_id'] }],
  'x-error-message': 'must name the item: `id` or `item_id`'
})

export type CheckoutQueryT = Static<typeof CheckoutQuery>

export const CheckoutResponse = Type.Object({
  code: Type.String({ description: 'Checkout code to redeem with POST /purchase (128 random bits, base64url)', examples: ['q1mHh2p1oN2wq0mVf3c3Zw'] }),
  expires_at: { ...Timestamp, description: 'The code expires at this instant (TTL or sale end, whichever is first)' },
  sale_id: Type.Integer(),
  item: Item
}, { title: 'CheckoutResponse', description: 'The item is reserved for the user: redeem `code` with POST /purchase before `expires_at`.' })

export const CheckoutForbiddenError = errorResponse('The user already holds or has bought `USER_LIMIT` items of this sale.', ['user_limit_reached'])
export const CheckoutNotFoundError = errorResponse('The item id is outside `1..SALE_ITEMS`.', ['unknown_item'])
export const CheckoutConflictError = errorResponse(
  'The item cannot be reserved now: `item_reserved` (another live checkout holds it), `already_reserved_by_you` ' +
  '(this user\'s own live checkout holds it: `code` and `expires_at` are that checkout\'s, so a retry after a lost ' +
  'answer can still buy), `item_sold`, `sold_out` (every item of the sale is sold), `no_active_sale` (the hour\'s ' +
  'sale is not open yet).',
  ['item_reserved', 'already_reserved_by_you', 'item_sold', 'sold_out', 'no_active_sale'],
  {
    fields: {
      code: Type.Optional({ ...CheckoutResponse.properties.code, description: 'With `already_reserved_by_you`: the code of the user\'s live checkout of this item' }),
      expires_at: Type.Optional({ ...Timestamp, description: 'With `already_reserved_by_you`: when that code expires' })
    }
  })

export const checkoutSchema = {
  summary: 'Reserve one item of the current sale',
  description: 'Reserves item `id` (or `item_id`) for `user_id` and returns a short-lived checkout code, valid for ' +
    '`CHECKOUT_TTL_SECONDS` or until the end of the sale, whichever comes first. Give the item once: `id` or ' +
    '`item_id` (both only if equal); a missing item, repeated parameters or disagreeing aliases are `invalid_request`. ' +
    'Every attempt is recorded, accepted or refused. No body is expected.',
  tags: ['sale'],
  querystring: CheckoutQuery,
  response: {
    200: CheckoutResponse,
    400: BadRequestError,
    403: CheckoutForbiddenError,
    404: CheckoutNotFoundError,
    409: CheckoutConflictError,
    408: RequestTimeoutError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    431: HeadersTooLargeError,
    429: RateLimitedError,
    500: InternalError,
    503: SaleUnavailableError
  }
}
