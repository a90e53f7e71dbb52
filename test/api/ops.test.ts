import assert from 'node:assert/strict'
import { test } from 'node:test'
import { buildTestApp, checkout, isolatedConfig, purchase, TestClock } from '../support/helpers.js'

test('GET / describes the service and the live counts of the current sale', async (t) => {
  const clock = new TestClock(Date.parse('2031-03-04T13:10:00.000Z'))
  const app = await buildTestApp(t, isolatedConfig(t, { USER_LIMIT: 10 }), clock)
  const codes = []
  for (const id of [1, 2, 3, 4]) codes.push((await checkout(app, `user_id=u&id=${id}`)).json().code)
  await purchase(app, codes[0])

  const body = (await app.inject('/')).json()
  assert.equal(body.service, 'flash-sale')
  assert.equal(body.now, '2031-03-04T13:10:00.000Z')
  assert.equal(body.next_sale_at, '2031-03-04T14:00:00.000Z')
  assert.deepEqual({ ...body.sale, id: undefined }, {
    id: undefined,
    opens_at: '2031-03-04T13:00:00.000Z',
    closes_at: '2031-03-04T14:00:00.000Z',
    items: 20,
    sold: 1,
    held: 3,
    left: 16,
    user_limit: 10,
    checkout_ttl_seconds: 60
  })

  // Every endpoint it advertises exists.
  for (const endpoint of Object.keys(body.endpoints)) {
    const [method, path] = endpoint.split(' ') as ['GET' | 'POST', string]
    const res = await app.inject({ method, url: path.split('?')[0] as string })
    assert.notEqual(res.statusCode, 404, endpoint)
  }

  // The periodic sweep returns expired holds; run it now instead of waiting for the timer.
  clock.advance(60_000)
  assert.equal(await app.sales.releaseExpired(), 3)
  const after = (await app.inject('/')).json().sale
  assert.deepEqual([after.sold, after.held, after.left], [1, 0, 19])
})

test('GET /health reports each dependency and answers 503 when one is down', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))
  const healthy = await app.inject('/health')
  assert.equal(healthy.statusCode, 200)
  assert.equal(healthy.json().status, 'ok')
  assert.equal(healthy.json().postgres.ok, true)
  assert.equal(healthy.json().redis.ok, true)
  assert.deepEqual(healthy.json().spool, { ok: true, bytes: 0, dropped: 0, quarantined: 0 }, 'the attempt spool is shown too')

  app.redis.disconnect() // a real loss of the connection; ioredis is told not to come back
  const redisDown = await app.inject('/health')
  assert.equal(redisDown.statusCode, 503)
  assert.equal(redisDown.json().status, 'unavailable')
  assert.equal(redisDown.json().postgres.ok, true)
  assert.equal(redisDown.json().redis.ok, false)
  assert.equal(typeof redisDown.json().redis.error, 'string')

  const refused = await checkout(app, 'user_id=a&id=1')
  assert.equal(refused.statusCode, 503)
  assert.equal(refused.json().error, 'service_unavailable')
  assert.equal(refused.headers['retry-after'], '1')
})
