import assert from 'node:assert/strict'
import { test } from 'node:test'
import { buildTestApp, checkout, isolatedConfig, purchase, sql, TestClock } from '../support/helpers.js'

const T0 = '2031-03-04T13:10:00.000Z'

test('POST /checkout reserves an item and records the attempt', async (t) => {
  const clock = new TestClock(Date.parse(T0))
  const app = await buildTestApp(t, isolatedConfig(t), clock)

  const res = await checkout(app, 'user_id=alice&id=7')
  assert.equal(res.statusCode, 200)
  const body = res.json()
  assert.match(body.code, /^[A-Za-z0-9_-]{22}$/)
  assert.equal(body.expires_at, '2031-03-04T13:11:00.000Z') // CHECKOUT_TTL_SECONDS=60
  assert.deepEqual(Object.keys(body.item).sort(), ['description', 'id', 'name', 'price'])
  assert.equal(body.item.id, 7)
  assert.equal(body.item.name, 'Item #7')
  assert.ok(body.item.price >= 1 && body.item.price < 1000)

  const [row] = await sql(app, 'SELECT sale_id, user_id, item_id, outcome, code, expires_at FROM checkout_attempts')
  assert.deepEqual({ ...row, sale_id: Number(row?.sale_id) }, {
    sale_id: body.sale_id, user_id: 'alice', item_id: 7, outcome: 'accepted', code: body.code, expires_at: new Date(body.expires_at)
  })
})

test('item_id is accepted as an alias of id (the seed API spelling)', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))
  const res = await checkout(app, 'user_id=bob&item_id=3')
  assert.equal(res.statusCode, 200)
  assert.equal(res.json().item.id, 3)
  assert.equal((await checkout(app, 'user_id=bob&item_id=4&id=4')).statusCode, 200, 'both, when equal, are fine')
})

test('refusals: unknown item, reserved, sold, user limit, with every attempt recorded', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))

  const unknown = await checkout(app, 'user_id=a&id=21')
  assert.equal(unknown.statusCode, 404)
  assert.equal(unknown.json().error, 'unknown_item')

  const first = await checkout(app, 'user_id=a&id=1')
  assert.equal(first.statusCode, 200)
  const reserved = await checkout(app, 'user_id=b&id=1')
  assert.equal(reserved.statusCode, 409)
  assert.equal(reserved.json().error, 'item_reserved')
  assert.equal(typeof reserved.json().message, 'string')

  const bought = await app.inject({ method: 'POST', url: `/purchase?code=${first.json().code}` })
  assert.equal(bought.statusCode, 200)
  const sold = await checkout(app, 'user_id=b&id=1')
  assert.equal(sold.statusCode, 409)
  assert.equal(sold.json().error, 'item_sold')

  // USER_LIMIT=3 counts the purchase above plus live reservations.
  assert.equal((await checkout(app, 'user_id=a&id=2')).statusCode, 200)
  assert.equal((await checkout(app, 'user_id=a&id=3')).statusCode, 200)
  const limited = await checkout(app, 'user_id=a&id=4')
  assert.equal(limited.statusCode, 403)
  assert.equal(limited.json().error, 'user_limit_reached')

  const outcomes = await sql<{ outcome: string, n: number }>(app,
    'SELECT outcome, count(*)::int AS n FROM checkout_attempts GROUP BY outcome ORDER BY outcome')
  assert.deepEqual(outcomes, [
    { outcome: 'accepted', n: 3 },
    { outcome: 'item_reserved', n: 1 },
    { outcome: 'item_sold', n: 1 },
    { outcome: 'unknown_item', n: 1 },
    { outcome: 'user_limit_reached', n: 1 }
  ])
})

test('checking out an item you already hold says it is yours, not another checkout\'s', async (t) => {
  const clock = new TestClock(Date.parse(T0))
  const app = await buildTestApp(t, isolatedConfig(t), clock)
  const held = await checkout(app, 'user_id=alice&id=4')
  assert.equal(held.statusCode, 200)

  // A retry after a lost answer: the refusal carries the live hold, so the customer can still buy.
  const again = await checkout(app, 'user_id=alice&id=4')
  assert.equal(again.statusCode, 409)
  assert.equal(again.json().error, 'already_reserved_by_you')
  assert.match(again.json().message, /you already hold/i)
  assert.deepEqual({ code: again.json().code, expires_at: again.json().expires_at }, { code: held.json().code, expires_at: held.json().expires_at })
  const other = await checkout(app, 'user_id=bob&id=4')
  assert.equal(other.json().error, 'item_reserved', 'someone else still gets item_reserved')
  assert.deepEqual(Object.keys(other.json()).sort(), ['error', 'message'], 'and learns nothing of the hold')

  // Once the hold expired the item is free again, for its former holder too.
  clock.advance(60_000)
  assert.equal((await checkout(app, 'user_id=alice&id=4')).statusCode, 200)
  const outcomes = await sql<{ outcome: string }>(app, "SELECT outcome FROM checkout_attempts WHERE user_id = 'alice' ORDER BY id")
  assert.deepEqual(outcomes.map((o) => o.outcome), ['accepted', 'already_reserved_by_you', 'accepted'])
})

test('a checkout whose answer was lost: the 409 of its retry gives the code back, and it buys', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))
  assert.equal((await checkout(app, 'user_id=carol&id=5')).statusCode, 200) // the answer the client never read
  const retry = await checkout(app, 'user_id=carol&id=5')
  assert.equal(retry.json().error, 'already_reserved_by_you')
  const bought = await purchase(app, retry.json().code)
  assert.equal(bought.statusCode, 200)
  assert.equal(bought.json().item.id, 5)
})

test('a sold-out sale refuses with sold_out', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t, { SALE_ITEMS: 3, USER_LIMIT: 10 }), new TestClock(Date.parse(T0)))
  for (const id of [1, 2, 3]) {
    const { code } = (await checkout(app, `user_id=u${id}&id=${id}`)).json()
    assert.equal((await app.inject({ method: 'POST', url: `/purchase?code=${code}` })).statusCode, 200)
  }
  const res = await checkout(app, 'user_id=late&id=2')
  assert.equal(res.statusCode, 409)
  assert.equal(res.json().error, 'sold_out')
})

test('an expired reservation gives the item back to the sale and the slot back to the user', async (t) => {
  const clock = new TestClock(Date.parse(T0))
  const app = await buildTestApp(t, isolatedConfig(t, { USER_LIMIT: 1 }), clock)
  assert.equal((await checkout(app, 'user_id=a&id=5')).statusCode, 200)
  assert.equal((await checkout(app, 'user_id=a&id=6')).json().error, 'user_limit_reached')
  assert.equal((await checkout(app, 'user_id=b&id=5')).json().error, 'item_reserved')

  clock.advance(60_000) // exactly the TTL: the code is expired at its expires_at instant
  assert.equal((await checkout(app, 'user_id=b&id=5')).statusCode, 200, 'item 5 is back on sale')
  assert.equal((await checkout(app, 'user_id=a&id=6')).statusCode, 200, 'user a has the slot back')
})

test('an expired hold frees its item and its user\'s slot at once, however many expired before it', async (t) => {
  // More expired holds than one checkout used to sweep, all older than the ones asked about.
  const clock = new TestClock(Date.parse(T0))
  const app = await buildTestApp(t, isolatedConfig(t, { SALE_ITEMS: 60, USER_LIMIT: 25 }), clock)
  for (let id = 1; id <= 25; id++) assert.equal((await checkout(app, `user_id=early&id=${id}`)).statusCode, 200)
  clock.advance(1)
  for (let id = 26; id <= 50; id++) assert.equal((await checkout(app, `user_id=a&id=${id}`)).statusCode, 200)
  assert.equal((await checkout(app, 'user_id=a&id=51')).json().error, 'user_limit_reached')

  clock.advance(60_000) // every hold expired; the periodic sweep has not run
  assert.equal((await checkout(app, 'user_id=a&id=51')).statusCode, 200, 'user a is not held to expired holds')
  assert.equal((await checkout(app, 'user_id=b&id=50')).statusCode, 200, 'the newest expired hold\'s item sells')
})

test('at 14:00:00.000 the 14:00 sale sells, with no roll having run', async (t) => {
  const clock = new TestClock(Date.parse('2031-03-04T13:59:59.999Z'))
  const app = await buildTestApp(t, isolatedConfig(t), clock)
  const before = await checkout(app, 'user_id=a&id=1')
  assert.equal(before.statusCode, 200)
  clock.advance(1) // 14:00:00.000: nothing but the clock moved
  const after = await checkout(app, 'user_id=a&id=1')
  assert.equal(after.statusCode, 200, 'item 1 is free again in the new sale')
  assert.equal(after.json().sale_id, before.json().sale_id + 1, 'sale ids count sales')
  const rows = await sql<{ sale_id: string, attempted_at: Date }>(app, 'SELECT sale_id, attempted_at FROM checkout_attempts ORDER BY attempted_at')
  assert.deepEqual(rows.map((r) => [Number(r.sale_id), r.attempted_at.toISOString()]),
    [[before.json().sale_id, '2031-03-04T13:59:59.999Z'], [after.json().sale_id, '2031-03-04T14:00:00.000Z']])
})

test('a code issued at 13:59:30 expires at the sale end, not 60 s later', async (t) => {
  const clock = new TestClock(Date.parse('2031-03-04T13:59:30.000Z'))
  const app = await buildTestApp(t, isolatedConfig(t), clock)
  assert.equal((await checkout(app, 'user_id=a&id=1')).json().expires_at, '2031-03-04T14:00:00.000Z')
})

test('bad parameters get 400 invalid_request, never 500, and are still recorded as attempts', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))
  const bad = [
    'id=1', // no user
    'user_id=&id=1',
    'user_id=a&id=abc',
    'user_id=a&id=0',
    'user_id=a&id=-3',
    'user_id=a&id=1.5',
    'user_id=a&id=99999999999',
    'user_id=a&id=1&id=2',
    'user_id=a&user_id=b&id=1',
    `user_id=${'x'.repeat(65)}&id=1`,
    'user_id=%C3%A9l%C3%A8ve&id=1',
    "user_id=a'%3B%20DROP%20TABLE%20sales%3B--&id=1",
    'user_id=%00&id=1',
    'user_id=a&id=1%00'
  ]
  for (const query of bad) {
    const res = await checkout(app, query)
    assert.equal(res.statusCode, 400, query)
    assert.equal(res.json().error, 'invalid_request', query)
  }
  // Every parameter matches its schema, the rule between them does not: 422 (the document cannot refuse these).
  const unprocessable = ['user_id=a', 'user_id=a&id=1&item_id=2']
  for (const query of unprocessable) {
    const res = await checkout(app, query)
    assert.equal(res.statusCode, 422, query)
    assert.equal(res.json().error, 'invalid_request', query)
  }
  const [{ n } = { n: 0 }] = await sql<{ n: number }>(app, "SELECT count(*)::int AS n FROM checkout_attempts WHERE outcome = 'invalid_request'")
  assert.equal(n, bad.length + unprocessable.length)
  const [{ sales } = { sales: 0 }] = await sql<{ sales: number }>(app, 'SELECT count(*)::int AS sales FROM sales')
  assert.equal(sales, 1)
})
