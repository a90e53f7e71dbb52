import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import type { FastifyInstance } from 'fastify'
import {
  createFlashSaleClient, type CheckoutErrorCode, type CheckoutResponse, type FlashSaleClient, type PurchaseErrorCode,
  type PurchaseResponse
} from '../../sdk/index.js'
import { buildTestApp, isolatedConfig, TestClock } from '../support/helpers.js'
import type { Config } from '../../src/config.js'

// Type-level checks (by `tsc --noEmit`): the SDK's refusals are exactly these unions, not `string`.
type Equals<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
const typeIs = <T extends true>(): T | undefined => undefined
type CheckoutCodes = 'invalid_request' | 'invalid_json' | 'invalid_content_length' | 'bad_request' | 'user_limit_reached' |
  'unknown_item' | 'item_reserved' | 'already_reserved_by_you' | 'item_sold' | 'sold_out' | 'no_active_sale' |
  'request_timeout' | 'payload_too_large' | 'unsupported_media_type' | 'headers_too_large' | 'rate_limited' |
  'internal_error' | 'service_unavailable' | 'clock_skew'
type PurchaseCodes = 'invalid_request' | 'invalid_json' | 'invalid_content_length' | 'bad_request' | 'unknown_code' |
  'code_used' | 'code_expired' | 'sale_over' | 'request_timeout' | 'payload_too_large' | 'unsupported_media_type' |
  'headers_too_large' | 'internal_error' | 'service_unavailable' | 'clock_skew'
typeIs<Equals<CheckoutErrorCode, CheckoutCodes>>()
typeIs<Equals<PurchaseErrorCode, PurchaseCodes>>()

/** The app on a real port and the generated client pointed at it. */
async function serve (t: TestContext, config: Config, clock: TestClock): Promise<{ app: FastifyInstance, api: FlashSaleClient }> {
  const app = await buildTestApp(t, config, clock)
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  assert.ok(address !== null && typeof address === 'object')
  return { app, api: createFlashSaleClient(`http://127.0.0.1:${address.port}`) }
}

const checkout = (api: FlashSaleClient, userId: string, id: number) =>
  api.POST('/checkout', { params: { query: { user_id: userId, id: String(id) } } })

/** A refusal as the SDK types it: `code` must be one of the operation's codes, or this does not compile. */
function assertRefused<E extends { error: string, message: string }> (
  result: { error?: E, response: Response }, status: number, code: NoInfer<E['error']>
): void {
  assert.equal(result.response.status, status, JSON.stringify(result.error))
  assert.equal(result.error?.error, code)
  assert.equal(typeof result.error?.message, 'string')
}

test('checkout and purchase (both shapes) through the generated client, over HTTP', async (t) => {
  const { api } = await serve(t, isolatedConfig(t), new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))

  const reserved = await checkout(api, 'alice', 7)
  assert.equal(reserved.response.status, 200)
  assert.ok(reserved.data !== undefined)
  const reservation: CheckoutResponse = reserved.data
  assert.match(reservation.code, /^[A-Za-z0-9_-]{22}$/)
  assert.equal(reservation.item.id, 7)
  assert.equal(reservation.expires_at, '2031-03-04T13:11:00.000Z')

  const byQuery = await api.POST('/purchase', { params: { query: { code: reservation.code } } })
  assert.equal(byQuery.response.status, 200)
  const bought: PurchaseResponse | undefined = byQuery.data
  assert.equal(bought?.item.id, 7)
  assert.equal(bought?.total_price, reservation.item.price)
  assert.equal(bought?.user_purchases, 1)

  const second = await checkout(api, 'alice', 8)
  assert.ok(second.data !== undefined)
  const byBody = await api.POST('/purchase', { body: { checkout_code: second.data.code } })
  assert.equal(byBody.response.status, 200)
  assert.equal(byBody.data?.item.id, 8)
  assert.equal(byBody.data?.user_purchases, 2)

  const health = await api.GET('/health')
  assert.equal(health.data?.status, 'ok')
  const root = await api.GET('/')
  assert.equal(root.data?.sale?.sold, 2)
})

test('every refusal the client can provoke arrives typed', async (t) => {
  const clock = new TestClock(Date.parse('2031-03-04T13:10:00.000Z'))
  const { api } = await serve(t, isolatedConfig(t, { USER_LIMIT: 3, CHECKOUT_TTL_SECONDS: 60 }), clock)

  assertRefused(await checkout(api, 'not a valid id', 1), 400, 'invalid_request')
  assertRefused(await api.POST('/checkout', { params: { query: { user_id: 'alice' } } }), 422, 'invalid_request')
  assertRefused(await checkout(api, 'alice', 21), 404, 'unknown_item') // SALE_ITEMS=20

  const held = await checkout(api, 'alice', 1)
  assert.ok(held.data !== undefined)
  assertRefused(await checkout(api, 'bob', 1), 409, 'item_reserved')
  assert.equal((await api.POST('/purchase', { params: { query: { code: held.data.code } } })).response.status, 200)
  assertRefused(await checkout(api, 'bob', 1), 409, 'item_sold')
  assertRefused(await api.POST('/purchase', { params: { query: { code: held.data.code } } }), 409, 'code_used')

  assert.equal((await checkout(api, 'alice', 2)).response.status, 200)
  const late = await checkout(api, 'alice', 3)
  assert.ok(late.data !== undefined)
  assertRefused(await checkout(api, 'alice', 4), 403, 'user_limit_reached') // 1 bought + 2 held = USER_LIMIT

  assertRefused(await api.POST('/purchase', { params: { query: { code: 'A'.repeat(22) } } }), 404, 'unknown_code')
  assertRefused(await api.POST('/purchase', { params: { query: { code: 'short' } } }), 400, 'invalid_request')
  assertRefused(await api.POST('/purchase', {}), 422, 'invalid_request')
  assertRefused(await api.POST('/purchase', { body: { checkout_code: 'x' } }), 400, 'invalid_request')
  assertRefused(await api.POST('/purchase', { body: { checkout_code: late.data.code }, bodySerializer: () => '{"checkout_code":' }), 400, 'invalid_json')

  clock.advance(60_000) // CHECKOUT_TTL_SECONDS: the code expires at its expires_at instant
  assertRefused(await api.POST('/purchase', { body: { checkout_code: late.data.code } }), 410, 'code_expired')
})

test('sold_out, the next sale and sale_over through the client', async (t) => {
  const clock = new TestClock(Date.parse('2031-03-04T13:59:00.000Z'))
  const { api } = await serve(t, isolatedConfig(t, { SALE_ITEMS: 2, USER_LIMIT: 10, CHECKOUT_TTL_SECONDS: 600 }), clock)

  const codes: string[] = []
  for (const id of [1, 2]) {
    const { data } = await checkout(api, `u${id}`, id)
    assert.ok(data !== undefined)
    codes.push(data.code)
  }
  const unredeemed = codes.pop() as string
  assert.equal((await api.POST('/purchase', { params: { query: { code: codes[0] as string } } })).response.status, 200)
  assertRefused(await checkout(api, 'late', 1), 409, 'item_sold')
  assert.equal((await api.POST('/purchase', { params: { query: { code: unredeemed } } })).response.status, 200)
  assertRefused(await checkout(api, 'late', 2), 409, 'sold_out')

  clock.set('2031-03-04T14:00:00.000Z') // the 14:00 sale opens by the clock
  const fresh = await checkout(api, 'u1', 1)
  assert.equal(fresh.response.status, 200, 'the new sale sells')

  // A code of the 13:00 sale, never redeemed: take one before the hour, redeem after it.
  clock.set('2031-03-04T14:59:30.000Z')
  const beforeHour = await checkout(api, 'u3', 2)
  assert.ok(beforeHour.data !== undefined)
  clock.set('2031-03-04T15:00:00.000Z')
  assertRefused(await api.POST('/purchase', { params: { query: { code: beforeHour.data.code } } }), 410, 'sale_over')
})
