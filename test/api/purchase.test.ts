import assert from 'node:assert/strict'
import { test } from 'node:test'
import { buildTestApp, checkout, isolatedConfig, purchase, sql, TestClock } from '../support/helpers.js'

const T0 = '2031-03-04T13:10:00.000Z'

test('POST /purchase?code= buys the reserved item and records the purchase', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))
  const reservation = (await checkout(app, 'user_id=alice&id=9')).json()
  const res = await purchase(app, reservation.code)
  assert.equal(res.statusCode, 200)
  const body = res.json()
  assert.equal(body.sale_id, reservation.sale_id)
  assert.deepEqual(body.item, reservation.item)
  assert.equal(body.total_price, reservation.item.price)
  assert.equal(body.purchased_at, T0)
  assert.equal(body.user_purchases, 1)
  assert.ok(Number.isInteger(body.purchase_id))

  const rows = await sql(app, 'SELECT id, item_id, user_id, code, price_cents FROM purchases')
  assert.deepEqual(rows, [{ id: String(body.purchase_id), item_id: 9, user_id: 'alice', code: reservation.code, price_cents: Math.round(body.total_price * 100) }])
})

test('the JSON body shape {"checkout_code"} works too, and user_purchases counts up', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))
  for (const [i, id] of [4, 5].entries()) {
    const { code } = (await checkout(app, `user_id=bob&id=${id}`)).json()
    const res = await app.inject({ method: 'POST', url: '/purchase', payload: { checkout_code: code } })
    assert.equal(res.statusCode, 200)
    assert.equal(res.json().user_purchases, i + 1)
  }
})

test('refusals: unknown, used and expired codes; no code (422) or a malformed one (400)', async (t) => {
  const clock = new TestClock(Date.parse(T0))
  const app = await buildTestApp(t, isolatedConfig(t), clock)

  const unknown = await purchase(app, 'A'.repeat(22))
  assert.equal(unknown.statusCode, 404)
  assert.equal(unknown.json().error, 'unknown_code')

  const { code } = (await checkout(app, 'user_id=a&id=1')).json()
  const bought = await purchase(app, code)
  assert.equal(bought.statusCode, 200)
  // A retry after a lost answer: the refusal names the committed purchase the code made.
  const used = await purchase(app, code)
  assert.equal(used.statusCode, 409)
  assert.equal(used.json().error, 'code_used')
  assert.deepEqual({ purchase_id: used.json().purchase_id, purchased_at: used.json().purchased_at },
    { purchase_id: bought.json().purchase_id, purchased_at: bought.json().purchased_at })

  const late = (await checkout(app, 'user_id=a&id=2')).json()
  clock.advance(60_000)
  const expired = await purchase(app, late.code)
  assert.equal(expired.statusCode, 410)
  assert.equal(expired.json().error, 'code_expired')
  assert.equal((await purchase(app, late.code)).json().error, 'code_expired', 'still expired on retry')
  assert.equal((await checkout(app, 'user_id=b&id=2')).statusCode, 200, 'its item went back on sale')

  // Neither shape: each is optional in the document, one is needed.
  const none = await app.inject({ method: 'POST', url: '/purchase' })
  assert.equal(none.statusCode, 422)
  assert.equal(none.json().error, 'invalid_request')
  for (const request of [
    { url: '/purchase?code=short' },
    { url: `/purchase?code=${code}`, payload: { checkout_code: 'short' } },
    { url: '/purchase', payload: { checkout_code: 42 } },
    { url: '/purchase', payload: { checkout_code: [code] } }
  ]) {
    const res = await app.inject({ method: 'POST', ...request })
    assert.equal(res.statusCode, 400, JSON.stringify(request))
    assert.equal(res.json().error, 'invalid_request')
  }
  assert.equal((await sql(app, 'SELECT 1 FROM purchases')).length, 1)
})

test('a code in both the query and the body: the query\'s is redeemed (Swagger UI pre-fills the body)', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))
  const first = (await checkout(app, 'user_id=a&id=1')).json()
  const second = (await checkout(app, 'user_id=a&id=2')).json()
  const both = await app.inject({ method: 'POST', url: `/purchase?code=${first.code}`, payload: { checkout_code: second.code } })
  assert.equal(both.statusCode, 200, both.body)
  assert.equal(both.json().item.id, 1)
  const equal = await app.inject({ method: 'POST', url: `/purchase?code=${second.code}`, payload: { checkout_code: second.code } })
  assert.equal(equal.statusCode, 200, equal.body)
  assert.equal(equal.json().item.id, 2)
  assert.deepEqual(await sql(app, 'SELECT item_id FROM purchases ORDER BY item_id'), [{ item_id: 1 }, { item_id: 2 }])
})

test('hostile bodies: invalid JSON, wrong content type, oversized', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))
  const cases = [
    { headers: { 'content-type': 'application/json' }, payload: '{"checkout_code":', status: 400, error: 'invalid_json' },
    { headers: { 'content-type': 'text/plain' }, payload: 'code', status: 415, error: 'unsupported_media_type' },
    { headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ checkout_code: 'x'.repeat(5000) }), status: 413, error: 'payload_too_large' }
  ]
  for (const { status, error, ...request } of cases) {
    const res = await app.inject({ method: 'POST', url: '/purchase', ...request })
    assert.equal(res.statusCode, status, error)
    assert.equal(res.json().error, error)
  }
  const wrongMethod = await app.inject({ method: 'GET', url: '/purchase' })
  assert.equal(wrongMethod.statusCode, 405)
  assert.equal(wrongMethod.json().error, 'method_not_allowed')
  assert.equal(wrongMethod.headers.allow, 'POST')
})

test('two redemptions of one code in the same instant buy once, and the others name that purchase', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t, { USER_LIMIT: 10 }), new TestClock(Date.parse(T0)))
  for (let item = 1; item <= 10; item++) {
    const { code } = (await checkout(app, `user_id=racer${item % 3}&id=${item}`)).json()
    const results = await Promise.all(Array.from({ length: 8 }, () => purchase(app, code)))
    const statuses = results.map((r) => r.statusCode).sort()
    assert.deepEqual(statuses, [200, 409, 409, 409, 409, 409, 409, 409])
    // A racing redemption waits for the winner's commit: never a bare code_used, which a client
    // could not tell from a purchase lost.
    const bought = results.find((r) => r.statusCode === 200)?.json().purchase_id
    for (const used of results.filter((r) => r.statusCode === 409)) {
      assert.deepEqual([used.json().error, used.json().purchase_id], ['code_used', bought], used.body)
    }
  }
  const [{ n } = { n: 0 }] = await sql<{ n: number }>(app, 'SELECT count(*)::int AS n FROM purchases')
  assert.equal(n, 10)
})

test('hour boundary: a code taken at 13:59 cannot be redeemed in the 14:00 sale', async (t) => {
  const clock = new TestClock(Date.parse('2031-03-04T13:59:00.000Z'))
  const app = await buildTestApp(t, isolatedConfig(t, { CHECKOUT_TTL_SECONDS: 600 }), clock)
  const { code } = (await checkout(app, 'user_id=a&id=1')).json()
  clock.set('2031-03-04T14:00:00.000Z')
  const res = await purchase(app, code)
  assert.equal(res.statusCode, 410)
  assert.equal(res.json().error, 'sale_over')
  assert.equal((await sql(app, 'SELECT 1 FROM purchases')).length, 0)

  // An hour later, in a sale no tick prepared (the request does): the same answer.
  clock.set('2031-03-04T15:00:01.000Z')
  assert.equal((await purchase(app, code)).json().error, 'sale_over')
})

test('codes cannot be guessed: 128 random bits each, and a near miss of a live code learns nothing', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t, { SALE_ITEMS: 40, USER_LIMIT: 40 }), new TestClock(Date.parse(T0)))
  const codes: string[] = []
  for (let id = 1; id <= 40; id++) codes.push((await checkout(app, `user_id=mallory&id=${id}`)).json().code)
  for (const code of codes) assert.equal(Buffer.from(code, 'base64url').length, 16, `${code} is 16 bytes of base64url`)
  assert.equal(new Set(codes).size, codes.length)
  // Consecutive codes share nothing: no counter, time or user inside them to enumerate from.
  const differingBits = (a: string, b: string) => [...Buffer.from(a, 'base64url')].reduce((n, byte, i) =>
    n + [...(byte ^ (Buffer.from(b, 'base64url')[i] as number)).toString(2)].filter((bit) => bit === '1').length, 0)
  const meanDistance = codes.slice(1).reduce((sum, code, i) => sum + differingBits(code, codes[i] as string), 0) / (codes.length - 1)
  assert.ok(meanDistance > 50 && meanDistance < 78, `consecutive codes differ in ~64 of 128 bits (${meanDistance})`)

  const live = codes[0] as string
  const nearMiss = live.slice(0, 10) + (live[10] === 'A' ? 'B' : 'A') + live.slice(11)
  const [miss, never] = await Promise.all([purchase(app, nearMiss), purchase(app, 'Q'.repeat(22))])
  assert.equal(miss.statusCode, 404)
  assert.deepEqual(miss.json(), never.json(), 'a near miss answers exactly as a code never issued')
  assert.equal((await purchase(app, live)).statusCode, 200, 'and the probing did not touch the live code')
})
