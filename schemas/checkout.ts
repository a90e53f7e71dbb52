import { Type } from '@sinclair/typebox'
import {
  BadRequestError, HeadersTooLargeError, InternalError, Item, ItemId, PayloadTooLargeError, RequestTimeoutError, RateLimitedError, Timestamp, SaleUnavailableError,
  UnsupportedMediaTypeError, errorResponse, unprocessableError
} from './common.js'

export const UserId = Type.String({
  minLength: 1,
  maxLength: 64,
  pattern: '^[A-Za-z0-9._:@-]+$',
  description: 'Caller-chosen user id: 1-64 of A-Z a-z 0-9 . _ : @ -',
  examples: ['user-1234'],
  'x-error-message': 'must be 1-64 characters of A-Z a-z 0-9 . _ : @ -'
})

/**
 * The item is named by `id` or by its alias `item_id` (both only when equal). OpenAPI describes
 * each query parameter on its own, so that rule is not in this schema (an object-level `anyOf`
 * would be enforced here but dropped from the document): routes/checkout.ts enforces it with a 422
 * (schemas/common.ts `unprocessableError`) and the operation's description states it.
 */
export const CheckoutQuery = Type.Object({
  user_id: UserId,
  // The example on `id` only: Swagger UI's "Try it out" would otherwise fill in both spellings.
  id: Type.Optional({ ...ItemId, examples: ['42'], description: `${ItemId.description}. Give \`id\` or \`item_id\` (422 without either).` }),
  item_id: Type.Optional({ ...ItemId, description: 'Alias of `id` (the seed API spelling): give it instead of `id`, or with `id` and equal to it (422 otherwise)' })
})

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

export const CheckoutUnprocessableError = unprocessableError(
  'The query matches the parameters\' schemas but breaks the rule between them: it names no item (neither `id` ' +
  'nor `item_id`), or gives both with different values. Nothing is reserved; the attempt is recorded.')

/** The checkout's response links (a route option of @fastify/swagger): its code is `purchase`'s input. */
export const checkoutLinks = {
  200: {
    purchase: {
      operationId: 'purchase',
      parameters: { code: '$response.body#/code' },
      description: 'Redeem the checkout code: `POST /purchase?code={code}`'
    }
  }
}

export const checkoutSchema = {
  operationId: 'checkout',
  summary: 'Reserve one item of the current sale',
  description: 'Reserves item `id` (or `item_id`) for `user_id` and returns a short-lived checkout code, valid for ' +
    '`CHECKOUT_TTL_SECONDS` or until the end of the sale, whichever comes first. Redeem it with `purchase` ' +
    '(the `purchase` link of the 200 response). Name the item once: `id` or `item_id`, or both when equal. Both ' +
    'are optional parameters, but a query with neither, or with two different values, is 422 `invalid_request`; ' +
    'a parameter that fails its schema (or is repeated) is 400 `invalid_request`. Every attempt is recorded, ' +
    'accepted or refused. No body is expected.',
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
    422: CheckoutUnprocessableError,
    431: HeadersTooLargeError,
    429: RateLimitedError,
    500: InternalError,
    503: SaleUnavailableError
  }
}
