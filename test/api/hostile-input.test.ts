import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import { Redis } from 'ioredis'
import { buildTestApp, checkout, isolatedConfig, sql, TestClock } from '../support/helpers.js'

const T0 = '2031-03-04T13:10:00.000Z'

/** Error codes only the POST /checkout handler answers with; each of those answers is an attempt row. */
const CHECKOUT_HANDLER_CODES = new Set([
  'invalid_request', 'unknown_item', 'item_reserved', 'already_reserved_by_you', 'item_sold', 'sold_out', 'user_limit_reached', 'no_active_sale'
])

// ---------------------------------------------------------------------------------------------
// Generators: what a hostile or broken client can put in a request line, headers and body.

const INJECTION = [
  "' OR '1'='1", "a'; DROP TABLE purchases;--", '1 UNION SELECT * FROM sales', '{"$gt":""}', '$where',
  '<script>alert(1)</script>', '../../etc/passwd', '..%2f..%2f', '$' + '{jndi:ldap://x/a}', '{{7*7}}', '`id`', '$(id)',
  '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'NaN', 'Infinity', '-0', '1e3', '0x10',
  '0b1', ' 1', '1 ', '+1', '01', '1.0', '٣', '１', '9007199254740993', '2147483648', '-2147483649', 'true', 'null',
  '[]', '{}', '\u0000', 'a\u0000b', '\uFEFF1', '\u202Ealice', 'alice\r\nx-injected: 1', '%', 'é', '😀', '\uD800'
]
const PERCENT_JUNK = ['%', '%%', '%zz', '%C3', '%E0%A4%A', '%00', '%FF%FE', '%2525', '%u0041', '%c0%af', '%0d%0a', '%F0%9F%98%80', '%ED%A0%80', '%2']
const KEYS = ['user_id', 'id', 'item_id', 'code', 'checkout_code', '__proto__', 'constructor', 'user_id[]', 'id[0]', 'user_id.x', '', 'USER_ID', 'id ']

const value = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('alice', 'bob', 'u-1', 'a.b@c:d_e', 'x'.repeat(64), 'x'.repeat(65)) },
  { weight: 3, arbitrary: fc.integer({ min: -3, max: 25 }).map(String) },
  { weight: 3, arbitrary: fc.constantFrom(...INJECTION) },
  { weight: 2, arbitrary: fc.constantFrom(...PERCENT_JUNK) },
  { weight: 2, arbitrary: fc.string() },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.integer({ min: 100, max: 20_000 }).map((n) => 'y'.repeat(n)) }
)
const key = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...KEYS) }, { weight: 1, arbitrary: fc.string({ maxLength: 12 }) })
/** Either percent-encoded properly or sent raw (unicode, NUL, `&`, `=` and all). */
const part = (arb: fc.Arbitrary<string>) => fc.tuple(arb, fc.boolean()).map(([s, encode]) => encode ? encodeURIComponent(s.replaceAll(/[\uD800-\uDFFF]/g, '')) : s)
const query = fc.oneof(
  { weight: 8, arbitrary: fc.array(fc.tuple(part(key), part(value)), { maxLength: 8 }).map((pairs) => pairs.map(([k, v]) => `${k}=${v}`).join('&')) },
  { weight: 1, arbitrary: fc.constantFrom('', '&', '&&&', '=', '==', '?', 'user_id', 'user_id=alice&&id=1', 'user_id=alice;id=1', 'user_id=alice&id=1#frag') },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 60 }) }
)

const PATHS = ['/checkout', '/purchase', '/', '/health', '/checkout/', '//checkout', '/CHECKOUT', '/checkout%00', '/purchase/../checkout', '/..%2f..%2fetc%2fpasswd', '/%', '/%zz', '/é', '/checkout;x', '/purchase%20']
const path = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('/checkout', '/purchase') },
  { weight: 2, arbitrary: fc.constantFrom(...PATHS) },
  // Anything else, as long as it cannot be one of our routes in disguise (`/%63heckout`).
  { weight: 1, arbitrary: fc.webPath().filter((p) => p.startsWith('/') && !/checkout|purchase|%/i.test(p)) }
)
const method = fc.oneof(
  { weight: 8, arbitrary: fc.constant('POST') },
  { weight: 2, arbitrary: fc.constantFrom('GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'TRACE', 'PROPFIND', 'SEARCH') }
)

const CONTENT_TYPES = [
  'application/json', 'application/json; charset=utf-8', 'Application/JSON', 'application/json;', 'application/json; charset=utf-16',
  'application/json; charset=latin1', 'application/vnd.api+json', 'text/plain', 'text/html', 'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=----x', 'application/octet-stream', '', '*/*', 'application/json, text/plain', 'application/jsonx'
]
const BODIES = [
  '{', '[', '}', 'null', '""', '0', '[]', '{}', '\u0000', '{"checkout_code": ["x"]}', '{"checkout_code": null}', '{"checkout_code": 1}',
  `{"checkout_code": "${'A'.repeat(22)}"}`, '{"__proto__": {"polluted": true}}', '{"constructor": {"prototype": {"polluted": true}}}',
  '{"checkout_code": "a", "checkout_code": "b"}', '\uFEFF{}', '{"a":1}{"b":2}', '1e999999', '{"a": "\\ud800"}', '{"a": "\\u0000"}'
]
const body = fc.record({
  contentType: fc.option(fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...CONTENT_TYPES) }, { weight: 1, arbitrary: fc.string({ maxLength: 40 }) }), { nil: undefined }),
  payload: fc.oneof(
    { weight: 3, arbitrary: fc.json({ maxDepth: 3 }) },
    { weight: 3, arbitrary: fc.constantFrom(...BODIES) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes)) },
    // Oversized (BODY_LIMIT_BYTES is 1024): sized here, built only when sent.
    { weight: 1, arbitrary: fc.integer({ min: 1025, max: 100_000 }).map((size) => ({ size })) }
  ),
  /** A Content-Length that lies about the body. */
  lyingLength: fc.boolean().map((b) => b && Math.random() < 0.2)
})
const request = fc.record({ method, path, query: fc.option(query, { nil: undefined }), body: fc.option(body, { nil: undefined }) })
type Req = typeof request extends fc.Arbitrary<infer R> ? R : never

function toInject (r: Req): InjectOptions {
  const options: InjectOptions = { method: r.method as InjectOptions['method'], url: r.query === undefined ? r.path : `${r.path}?${r.query}` }
  if (r.body !== undefined) {
    const { contentType, payload, lyingLength } = r.body
    const data = typeof payload === 'object' && 'size' in payload ? `{"checkout_code":"${'z'.repeat(payload.size)}"}` : payload
    const headers: Record<string, string> = {}
    if (contentType !== undefined) headers['content-type'] = contentType
    if (lyingLength) headers['content-length'] = String(Buffer.byteLength(data) + 7)
    options.headers = headers
    options.payload = data
  }
  return options
}

function describe (r: Req, res: LightMyRequestResponse): string {
  return `${r.method} ${JSON.stringify(toInject(r).url).slice(0, 300)} ${JSON.stringify(r.body)?.slice(0, 200)} -> ${res.statusCode} ${res.body.slice(0, 300)}`
}

// ---------------------------------------------------------------------------------------------

test('hostile requests: never a 5xx, always our JSON error shape, and every checkout read recorded (except 429s)', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))
  const tally = { sent: 0, checkoutHandledRefusals: 0, checkoutRefused: 0, checkoutAccepted: 0, checkoutLimited: 0 }

  await fc.assert(fc.asyncProperty(fc.array(request, { minLength: 1, maxLength: 50, size: 'max' }), async (requests) => {
    // A burst at once, as a crowd would send it (and as the group commit batches it).
    const responses = await Promise.all(requests.map((r) => app.inject(toInject(r))))
    requests.forEach((r, i) => {
      const res = responses[i] as LightMyRequestResponse
      tally.sent++
      const what = describe(r, res)
      assert.ok(res.statusCode < 500, what)
      assert.equal(res.headers['x-content-type-options'], 'nosniff', what)
      if (r.method === 'HEAD') return // no body, by definition
      assert.match(String(res.headers['content-type']), /^application\/json/, what)
      const json = JSON.parse(res.body) as { error?: unknown, message?: unknown }
      if (res.statusCode >= 400) {
        assert.equal(typeof json.error, 'string', what)
        assert.match(json.error as string, /^[a-z_]+$/, what)
        assert.equal(typeof json.message, 'string', what)
      }
      // app.inject sends the URL through WHATWG URL as a client would (`/purchase/../checkout`
      // arrives as `/checkout`), so the route is judged on the path the server received.
      if (r.method === 'POST' && res.raw.req.url?.split('?')[0] === '/checkout') {
        if (res.statusCode === 200) tally.checkoutAccepted++
        else if (res.statusCode === 429) tally.checkoutLimited++
        else tally.checkoutRefused++ // bad bodies included: recorded as invalid_request
        if ([400, 403, 404, 409].includes(res.statusCode) && CHECKOUT_HANDLER_CODES.has(json.error as string)) tally.checkoutHandledRefusals++
      } else {
        assert.notEqual(res.statusCode, 429, `only POST /checkout is rate limited: ${what}`)
      }
    })
  }), { numRuns: 250, includeErrorInReport: true })

  assert.ok(tally.sent >= 4000, `sent ${tally.sent}`)
  assert.ok(tally.checkoutHandledRefusals > 100, `the fuzz reached the checkout handler (${tally.checkoutHandledRefusals} times)`)
  const [counts] = await sql<{ refused: number, accepted: number, purchases: number }>(app, `
    SELECT (SELECT count(*)::int FROM checkout_attempts WHERE outcome <> 'accepted') AS refused,
           (SELECT count(*)::int FROM checkout_attempts WHERE outcome = 'accepted') AS accepted,
           (SELECT count(*)::int FROM purchases) AS purchases`)
  assert.deepEqual(counts, { refused: tally.checkoutRefused, accepted: tally.checkoutAccepted, purchases: 0 },
    `tally ${JSON.stringify(tally)}`)
})

test('a non-finite item id is a 400 and does not fail the batch of attempts it shares', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))
  // ajv coerces these to ±Infinity as "integers" and skips the range checks; Postgres then
  // refused the row, and with it every attempt in the same group commit (all answered 503).
  const bad = ['user_id=a&id=Infinity', 'user_id=a&id=-Infinity', 'user_id=a&id=1e400', 'user_id=a&item_id=Infinity', 'user_id=a&id=Infinity&item_id=Infinity']
  const [good, ...refused] = await Promise.all([checkout(app, 'user_id=b&id=1'), ...bad.map((q) => checkout(app, q))])
  assert.equal(good?.statusCode, 200)
  for (const [i, res] of refused.entries()) {
    assert.equal(res.statusCode, 400, bad[i])
    assert.equal(res.json().error, 'invalid_request', bad[i])
  }
  const [{ n } = { n: 0 }] = await sql<{ n: number }>(app, "SELECT count(*)::int AS n FROM checkout_attempts WHERE outcome = 'invalid_request' AND item_id IS NULL")
  assert.equal(n, bad.length)
})

// ---------------------------------------------------------------------------------------------
// Abuse limits (plugins/rate-limit.ts) and security headers (plugins/security.ts).

const assertRateLimited = (res: LightMyRequestResponse, windowSeconds: number) => {
  assert.equal(res.statusCode, 429)
  const retryAfter = Number(res.headers['retry-after'])
  assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= windowSeconds, `retry-after ${res.headers['retry-after']}`)
  const body = res.json()
  assert.deepEqual(Object.keys(body).sort(), ['error', 'message'])
  assert.equal(body.error, 'rate_limited')
  assert.equal(typeof body.message, 'string')
}

test('the per-user limit answers 429 with Retry-After, records no attempt, and spares other users on the same IP', async (t) => {
  const config = isolatedConfig(t, { RATE_LIMIT_PER_USER: 3, RATE_LIMIT_WINDOW_MS: 60_000, USER_LIMIT: 10 })
  const app = await buildTestApp(t, config, new TestClock(Date.parse(T0)))
  for (const id of [1, 2, 3]) assert.equal((await checkout(app, `user_id=alice&id=${id}`)).statusCode, 200)
  const limited = await checkout(app, 'user_id=alice&id=4')
  assertRateLimited(limited, 60)
  assert.equal(limited.headers['x-content-type-options'], 'nosniff', 'security headers on a 429 too')
  assertRateLimited(await checkout(app, 'user_id=alice&item_id=5'), 60)

  assert.equal((await checkout(app, 'user_id=bob&id=4')).statusCode, 200, 'same IP, another user: not limited')
  assert.equal((await app.inject({ method: 'POST', url: '/purchase?code=AAAAAAAAAAAAAAAAAAAAAA' })).statusCode, 404, 'only /checkout is limited')

  const [{ n } = { n: -1 }] = await sql<{ n: number }>(app, 'SELECT count(*)::int AS n FROM checkout_attempts')
  assert.equal(n, 4, 'the limited requests never reached the handler')

  // Counted by the checkout decision in the sale's own Redis slot (under the test's prefix), so
  // instances share the count: alice's five tries, bob's one.
  const redis = new Redis(config.REDIS_URL)
  t.after(() => redis.disconnect())
  // One hash per sale (user -> '<window end>:<count>', and the placeholder ''), expiring with the sale.
  const keys = await redis.keys(`${config.REDIS_KEY_PREFIX}{sale:*}:rate`)
  assert.equal(keys.length, 1, keys.join())
  const windowEnds = Date.parse(T0) - (Date.parse(T0) % 60_000) + 60_000
  assert.deepEqual(await redis.hgetall(keys[0] as string), { '': '', alice: `${windowEnds}:5`, bob: `${windowEnds}:1` })
  assert.ok(await redis.pttl(keys[0] as string) > 0, 'the counts expire')
})

test('the per-user window ends and the user may try again', async (t) => {
  // Windows follow the service's clock (aligned on multiples of the window).
  const clock = new TestClock(Date.parse(T0))
  const app = await buildTestApp(t, isolatedConfig(t, { RATE_LIMIT_PER_USER: 1, RATE_LIMIT_WINDOW_MS: 300 }), clock)
  assert.equal((await checkout(app, 'user_id=carol&id=1')).statusCode, 200)
  assertRateLimited(await checkout(app, 'user_id=carol&id=2'), 1)
  clock.advance(300)
  assert.equal((await checkout(app, 'user_id=carol&id=2')).statusCode, 200)
})

test('the per-IP limit counts every user (and malformed requests) from one address, and no other address', async (t) => {
  const config = isolatedConfig(t, { RATE_LIMIT_PER_IP: 3, RATE_LIMIT_PER_USER: 0, RATE_LIMIT_WINDOW_MS: 60_000 })
  const app = await buildTestApp(t, config, new TestClock(Date.parse(T0)))
  const from = (remoteAddress: string, query: string) => app.inject({ method: 'POST', url: `/checkout?${query}`, remoteAddress })
  assert.equal((await from('203.0.113.7', 'user_id=a&id=1')).statusCode, 200)
  assert.equal((await from('203.0.113.7', 'user_id=b&id=2')).statusCode, 200)
  assert.equal((await from('203.0.113.7', 'user_id=%00&id=2')).statusCode, 400)
  assertRateLimited(await from('203.0.113.7', 'user_id=c&id=3'), 60)
  assertRateLimited(await from('203.0.113.7', 'user_id=%00&id=3'), 60)
  assert.equal((await from('203.0.113.8', 'user_id=c&id=3')).statusCode, 200, 'another address is not limited')
  // IPv6 clients are counted per /64, so rotating addresses inside one allocation does not help.
  assert.equal((await from('2001:db8::1', 'user_id=d&id=4')).statusCode, 200)
  assert.equal((await from('2001:db8::2', 'user_id=e&id=5')).statusCode, 200)
  assert.equal((await from('2001:db8::3', 'user_id=f&id=6')).statusCode, 200)
  assertRateLimited(await from('2001:db8::4', 'user_id=g&id=7'), 60)
})

test('with the default abuse limits a checkout is one Redis call: the per-user count rides on the decision', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))
  assert.equal((await checkout(app, 'user_id=warmup&id=1')).statusCode, 200)
  const sent: string[] = []
  const sendCommand = app.redis.sendCommand.bind(app.redis)
  app.redis.sendCommand = (command, stream) => {
    // The readiness probe (PING) and the shared clock (TIME) run on their own timers, whenever they fall due.
    if (command.name !== 'ping' && command.name !== 'time') sent.push(command.name)
    return sendCommand(command, stream)
  }
  t.after(() => { app.redis.sendCommand = sendCommand })
  assert.equal((await checkout(app, 'user_id=dave&id=2')).statusCode, 200)
  assert.equal((await checkout(app, 'user_id=dave&id=2')).statusCode, 409)
  // (An accepted one then confirms its code once its row has committed: see "Phantom holds" in docs/architecture.md.)
  assert.deepEqual(sent, ['evalsha', 'hget', 'evalsha'], 'one reservation script per checkout, no separate rate-limit call')
})

test('limits of 0 are off: nothing is counted', async (t) => {
  const config = isolatedConfig(t, { RATE_LIMIT_PER_IP: 0, RATE_LIMIT_PER_USER: 0 })
  const app = await buildTestApp(t, config, new TestClock(Date.parse(T0)))
  for (let i = 0; i < 5; i++) assert.notEqual((await checkout(app, `user_id=a&id=${i + 1}`)).statusCode, 429)
  const redis = new Redis(config.REDIS_URL)
  t.after(() => redis.disconnect())
  assert.deepEqual(await redis.keys(`${config.REDIS_KEY_PREFIX}rate-limit:*`), [])
  const [rates] = await redis.keys(`${config.REDIS_KEY_PREFIX}*:rate`)
  assert.deepEqual(await redis.hgetall(rates as string), { '': '' }, 'the sale\'s rate counts hold only their placeholder')
})

test('the per-IP limit is off by default, and on (from X-Forwarded-For) when TRUST_PROXY is set', async (t) => {
  const hammer = async (app: FastifyInstance) => {
    const answers: number[] = []
    for (let i = 0; i < 5; i++) {
      const res = await app.inject({ method: 'POST', url: `/checkout?user_id=u${i}&id=${i + 1}`, remoteAddress: '203.0.113.9', headers: { 'x-forwarded-for': '198.51.100.4' } })
      answers.push(res.statusCode)
    }
    return answers
  }
  const direct = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))
  assert.deepEqual(await hammer(direct), [200, 200, 200, 200, 200])
  assert.deepEqual(direct.checkoutIpLimit, [], 'no per-IP hook at all')

  const proxied = await buildTestApp(t, isolatedConfig(t, { TRUST_PROXY: true }), new TestClock(Date.parse(T0)))
  assert.equal(proxied.checkoutIpLimit.length, 1)
  const limited = await buildTestApp(t, isolatedConfig(t, { TRUST_PROXY: true, RATE_LIMIT_PER_IP: 3 }), new TestClock(Date.parse(T0)))
  assert.deepEqual(await hammer(limited), [200, 200, 200, 429, 429])
  const res = await limited.inject({ method: 'POST', url: '/checkout?user_id=z&id=9', remoteAddress: '203.0.113.9', headers: { 'x-forwarded-for': '198.51.100.5' } })
  assert.equal(res.statusCode, 200, 'another client behind the same proxy is not limited')
})

test('with Redis gone the limiter lets the request through: the answer is the service\'s 503, not a 500', async (t) => {
  const app: FastifyInstance = await buildTestApp(t, isolatedConfig(t, { RATE_LIMIT_PER_USER: 5, RATE_LIMIT_PER_IP: 5 }), new TestClock(Date.parse(T0)))
  app.redis.disconnect()
  const res = await checkout(app, 'user_id=a&id=1')
  assert.equal(res.statusCode, 503)
  assert.equal(res.json().error, 'service_unavailable')
})

test('security headers on every response: success, refusal, 404, body errors', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))
  const responses = [
    await checkout(app, 'user_id=a&id=1'),
    await checkout(app, 'user_id=a&id=999'),
    await app.inject('/health'),
    await app.inject('/nowhere'),
    await app.inject({ method: 'POST', url: '/purchase', headers: { 'content-type': 'text/plain' }, payload: 'x' }),
    await app.inject({ method: 'POST', url: '/purchase', headers: { 'content-type': 'application/json' }, payload: 'x'.repeat(5000) })
  ]
  assert.deepEqual(responses.map((r) => r.statusCode), [200, 404, 200, 404, 415, 413])
  for (const res of responses) {
    assert.equal(res.headers['x-content-type-options'], 'nosniff')
    assert.equal(res.headers['x-frame-options'], 'DENY')
    assert.equal(res.headers['content-security-policy'], "default-src 'none';frame-ancestors 'none'")
    assert.match(String(res.headers['strict-transport-security']), /^max-age=\d+/)
    assert.equal(res.headers['referrer-policy'], 'no-referrer')
    assert.equal(res.headers['cross-origin-resource-policy'], 'same-origin')
    assert.equal(res.headers['x-powered-by'], undefined)
  }
})
