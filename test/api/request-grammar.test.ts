import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { ID_PATTERN } from '../../schemas/common.js'
import { buildTestApp, checkout, isolatedConfig, sql, TestClock } from '../support/helpers.js'

const T0 = Date.parse('2031-03-04T13:10:00.000Z')
const INT4_MAX = 2_147_483_647n
const USER_ID = /^[A-Za-z0-9._:@-]{1,64}$/

/** The id grammar by arithmetic: the canonical decimal spelling of an integer in 1..2147483647. */
const isCanonicalId = (s: string): boolean => /^[0-9]+$/.test(s) && String(BigInt(s)) === s && BigInt(s) >= 1n && BigInt(s) <= INT4_MAX

/** Strings close to ids: digits, signs, radix prefixes, exponents, spaces, dots, around the int4 edge. */
const idLike = fc.oneof(
  fc.bigInt({ min: -10n, max: 2n * INT4_MAX }).map(String),
  fc.bigInt({ min: INT4_MAX - 1000n, max: INT4_MAX + 1000n }).map(String),
  fc.stringMatching(/^[-+ 0\t\n]{0,2}[0-9]{0,12}(\.[0-9]?|e[0-9]|[ \t\n])?$/),
  fc.tuple(fc.constantFrom('0x', '0b', '0o', '0X', '+', '-', '0', ' ', '\t', '\n', '\uFEFF', '１'), fc.nat({ max: 5000 })).map(([p, n]) => `${p}${n}`),
  fc.constantFrom('', '0', '00', '1e3', '1E3', 'Infinity', 'NaN', '1_000', '٣', '2147483647', '2147483648', '9999999999', '10000000000'),
  fc.string({ maxLength: 12 })
)

test('ID_PATTERN is exactly the canonical decimal integers 1..2147483647', () => {
  const pattern = new RegExp(ID_PATTERN)
  fc.assert(fc.property(idLike, (s) => pattern.test(s) === isCanonicalId(s)), { numRuns: 20_000 })
  for (const edge of ['1', '9', '10', '999999999', '1000000000', '2147483647']) assert.ok(pattern.test(edge), edge)
  for (const edge of ['0', '01', '2147483648', '3000000000', '9999999999', '10000000000']) assert.ok(!pattern.test(edge), edge)
})

test('only canonical ids are ids: everything else is invalid_request naming the parameter, and still an attempt row', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t, { SALE_ITEMS: 20, USER_LIMIT: 3 }), new TestClock(T0))
  // The examples: each used to reserve (or look up) another number than it spells.
  const refused = ['0x10', '0b101', '0o17', '1e3', '+7', '01', '%09%0A8', '', '8%20', '%208', '8.0', '-0', '2147483648', 'Infinity']
  for (const [i, raw] of refused.entries()) {
    for (const name of ['id', 'item_id']) {
      const res = await checkout(app, `user_id=u${i}-${name}&${name}=${raw}`)
      assert.equal(res.statusCode, 400, `${name}=${raw}`)
      assert.deepEqual(res.json(), {
        error: 'invalid_request', message: `querystring/${name} must be an integer from 1 to 2147483647 in plain decimal digits`
      }, `${name}=${raw}`)
    }
  }
  const rows = await sql<{ outcome: string, item_id: number | null }>(app, 'SELECT outcome, item_id FROM checkout_attempts')
  assert.equal(rows.length, refused.length * 2, 'every refused checkout is an attempt row')
  assert.ok(rows.every((r) => r.outcome === 'invalid_request' && r.item_id === null), JSON.stringify(rows))

  // In the grammar but outside the sale: a business answer, not a validation one.
  assert.equal((await checkout(app, 'user_id=a&id=2147483647')).json().error, 'unknown_item')
  assert.equal((await checkout(app, 'user_id=a&id=8')).statusCode, 200)
})

test('the item is named once: by `id` or `item_id`, both only when equal (else 422: the schema cannot say it)', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(T0))
  const none = await checkout(app, 'user_id=a')
  assert.equal(none.statusCode, 422)
  assert.deepEqual(none.json(), { error: 'invalid_request', message: 'querystring must name the item: `id` or `item_id`' })
  const disagreeing = await checkout(app, 'user_id=a&id=1&item_id=2')
  assert.equal(disagreeing.statusCode, 422)
  assert.deepEqual(disagreeing.json(), { error: 'invalid_request', message: 'querystring/item_id must equal `id` when both are given' })
  assert.equal((await checkout(app, 'user_id=a&id=3&item_id=3')).statusCode, 200)
  assert.equal((await checkout(app, 'user_id=a&item_id=4')).statusCode, 200)
  const rows = await sql<{ outcome: string }>(app, 'SELECT outcome FROM checkout_attempts ORDER BY outcome')
  assert.deepEqual(rows.map((r) => r.outcome), ['accepted', 'accepted', 'invalid_request', 'invalid_request'])
})

test('a repeated parameter says "repeated"', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(T0))
  for (const [query, name] of [['user_id=a&id=1&id=2', 'id'], ['user_id=a&id=1&id=1', 'id'], ['user_id=a&user_id=b&id=1', 'user_id'], ['user_id=a&item_id=3&item_id=3', 'item_id']]) {
    const res = await checkout(app, query as string)
    assert.equal(res.statusCode, 400, query)
    assert.deepEqual(res.json(), { error: 'invalid_request', message: `querystring/${name} is repeated: give it once` }, query)
  }
  const twice = await app.inject({ method: 'POST', url: `/purchase?code=${'A'.repeat(22)}&code=${'A'.repeat(22)}` })
  assert.deepEqual(twice.json(), { error: 'invalid_request', message: 'querystring/code is repeated: give it once' })
  const [{ n } = { n: 0 }] = await sql<{ n: number }>(app, "SELECT count(*)::int AS n FROM checkout_attempts WHERE outcome = 'invalid_request'")
  assert.equal(n, 4)
})

test('property: the checkout answers by the id and user_id grammars, and records every attempt', async (t) => {
  // A big sale and a high limit: every well-formed request gets a business answer, never a 400.
  const app = await buildTestApp(t, isolatedConfig(t, { SALE_ITEMS: 100_000, USER_LIMIT: 1000 }), new TestClock(T0))
  const userId = fc.oneof(
    fc.stringMatching(/^[A-Za-z0-9._:@-]{1,64}$/),
    fc.string({ maxLength: 70 }),
    fc.constantFrom('', 'x'.repeat(64), 'x'.repeat(65), 'a b', 'a+b', 'é', 'a/b', 'a\u0000b')
  )
  let sent = 0
  await fc.assert(fc.asyncProperty(userId, idLike, async (user, id) => {
    const clean = (s: string) => encodeURIComponent(s.replaceAll(/[\uD800-\uDFFF]/g, ''))
    const [u, i] = [user.replaceAll(/[\uD800-\uDFFF]/g, ''), id.replaceAll(/[\uD800-\uDFFF]/g, '')]
    const res = await checkout(app, `user_id=${clean(u)}&id=${clean(i)}`)
    sent++
    const body = res.json() as { error?: string, message?: string }
    if (!USER_ID.test(u)) {
      assert.equal(res.statusCode, 400)
      assert.equal(body.message, 'querystring/user_id must be 1-64 characters of A-Z a-z 0-9 . _ : @ -')
    } else if (!isCanonicalId(i)) {
      assert.equal(res.statusCode, 400)
      assert.equal(body.message, 'querystring/id must be an integer from 1 to 2147483647 in plain decimal digits')
    } else {
      assert.ok(res.statusCode === 200 || (BigInt(i) > 100_000n ? body.error === 'unknown_item' : res.statusCode === 409),
        `${u} ${i}: ${res.statusCode} ${JSON.stringify(body)}`)
    }
  }), { numRuns: 400 })
  const [{ n } = { n: 0 }] = await sql<{ n: number }>(app, 'SELECT count(*)::int AS n FROM checkout_attempts')
  assert.equal(n, sent, 'one attempt row per request, valid or not')
})

test('an empty body with a JSON content type is no body: ?code= alone buys', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(T0))
  const { code } = (await checkout(app, 'user_id=alice&id=5')).json() as { code: string }
  const res = await app.inject({ method: 'POST', url: `/purchase?code=${code}`, headers: { 'content-type': 'application/json' }, payload: '' })
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(res.json().item.id, 5)
  // A body that is present but not JSON is still refused as such.
  const blank = await app.inject({ method: 'POST', url: `/purchase?code=${code}`, headers: { 'content-type': 'application/json' }, payload: ' ' })
  assert.equal(blank.json().error, 'invalid_json')
})
