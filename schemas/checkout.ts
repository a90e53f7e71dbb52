import { Type, type Static } from '@sinclair/typebox'
import { Item, ItemId, Timestamp, errorResponses } from './common.js'

export const UserId = Type.String({
  minLength: 1,
  maxLength: 64,
  pattern: '^[A-Za-z0-9._:@-]+$',
  description: 'Caller-chosen user id: 1-64 of A-Z a-z 0-9 . _ : @ -',
  examples: ['user-1234']
})

export const CheckoutQuery = Type.Object({
  user_id: UserId,
  id: Type.Optional(ItemId),
  item_id: Type.Optional({ ...ItemId, description: 'Alias of `id` (the seed API spelling)' })
})

export type CheckoutQueryT = Static<typeof CheckoutQuery>

export const CheckoutResponse = Type.Object({
  code: Type.String({ description: 'Checkout code to redeem with POST /purchase (128 random bits, base64url)', examples: ['q1mHh2p1oN2wq0mVf3c3Zw'] }),
  expires_at: { ...Timestamp, description: 'The code expires at this instant (TTL or sale end, whichever is first)' },
  sale_id: Type.Integer(),
  item: Item
}, { title: 'CheckoutResponse' })

export const checkoutSchema = {
  summary: 'Reserve one item of the current sale',
  description: 'Reserves item `id` (or `item_id`) for `user_id` and returns a short-lived checkout code. ' +
    'Every attempt is recorded, accepted or refused.',
  tags: ['sale'],
  querystring: CheckoutQuery,
  response: {
    200: CheckoutResponse,
    ...errorResponses(400, 403, 404, 409, 429, 503)
  }
}
