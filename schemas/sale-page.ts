import { Type, type Static } from '@sinclair/typebox'
import { SaleCounts, Timestamp } from './common.js'

/** One message of GET /sale/events (the `data:` of each Server-Sent Event, as JSON). */
export const SaleSnapshot = Type.Object({
  status: Type.Union([Type.Literal('live'), Type.Literal('unavailable')], {
    description: '`live`: counts below are current; `unavailable`: Redis or Postgres did not answer (then `sale` is null)'
  }),
  now: Timestamp,
  sale: Type.Union([SaleCounts, Type.Null()]),
  next_sale_at: Timestamp,
  checkouts_per_second: Type.Number({ description: 'Checkout attempts committed per second by this instance, over the last few seconds' }),
  accepted_per_second: Type.Number({ description: 'Accepted checkouts per second, same window' })
}, { title: 'SaleSnapshot' })

export type SaleSnapshotT = Static<typeof SaleSnapshot>

export const salePageSchema = {
  operationId: 'getSalePage',
  summary: 'Live sale page',
  description: 'An HTML page showing the current sale\'s sold / held / left items, the countdown to the next sale and ' +
    'checkouts per second, updated live from GET /sale/events.',
  tags: ['ops'],
  response: {
    200: { description: 'The page (its script and stylesheet are /sale/sale.js and /sale/sale.css)', content: { 'text/html': { schema: Type.String() } } }
  }
}

export const saleEventsSchema = {
  operationId: 'getSaleEvents',
  summary: 'Live sale counts (Server-Sent Events)',
  description: 'A text/event-stream that sends a SaleSnapshot as JSON about once a second until the client leaves ' +
    'or the server shuts down.',
  tags: ['ops'],
  response: {
    200: { description: 'An event stream; each `data:` line is a SaleSnapshot', content: { 'text/event-stream': { schema: Type.String() } } }
  }
}

/** The page's script and stylesheet: not API, kept out of the OpenAPI document. */
export const saleAssetSchema = { hide: true }
