import { Type, type Static } from '@sinclair/typebox'

/** Every 4xx/5xx body. `error` is the stable machine-readable code; `message` is for humans. */
export const ErrorResponse = Type.Object({
  error: Type.String({ description: 'Stable machine-readable error code', examples: ['item_reserved'] }),
  message: Type.String({ description: 'Human-readable explanation' })
}, { title: 'ErrorResponse' })

export const Item = Type.Object({
  id: Type.Integer({ minimum: 1, examples: [42] }),
  name: Type.String({ examples: ['Item #42'] }),
  description: Type.String(),
  price: Type.Number({ description: 'Price in currency units, two decimals', examples: [199.99] })
}, { title: 'Item' })

export type ItemT = Static<typeof Item>

/** ISO-8601 UTC timestamp. */
export const Timestamp = Type.String({ format: 'date-time', examples: ['2026-11-25T14:59:59.000Z'] })

/** Integer ids as they arrive in query strings: digits only, within a Postgres int4. */
export const ItemId = Type.Integer({ minimum: 1, maximum: 2_147_483_647, description: 'Item id, 1..SALE_ITEMS' })

/** The error responses a route can give, keyed by status, all with the same body. */
export const errorResponses = (...statuses: number[]) =>
  Object.fromEntries(statuses.map((status) => [status, ErrorResponse]))
