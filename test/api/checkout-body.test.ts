import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { test } from 'node:test'
import { waitFor } from '../support/fault-kit.js'
import { buildTestApp, isolatedConfig, sql, TestClock } from '../support/helpers.js'

test('a checkout with a valid query and an unreadable body is refused with a 4xx and recorded as invalid_request', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t, { BODY_LIMIT_BYTES: 1024 }), new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))
  const post = (user: string, headers: Record<string, string>, payload: string) =>
    app.inject({ method: 'POST', url: `/checkout?user_id=${user}&id=7`, headers, payload })
  const cases = [
    { user: 'json', res: await post('json', { 'content-type': 'application/json' }, '{"oops'), status: 400, error: 'invalid_json' },
    { user: 'json2', res: await post('json2', { 'content-type': 'application/json' }, '{}}'), status: 400, error: 'invalid_json' },
    { user: 'text', res: await post('text', { 'content-type': 'text/plain' }, 'hello'), status: 415, error: 'unsupported_media_type' },
    { user: 'big', res: await post('big', { 'content-type': 'application/json' }, JSON.stringify({ pad: 'x'.repeat(2000) })), status: 413, error: 'payload_too_large' }
  ]
  for (const { user, res, status, error } of cases) {
    assert.equal(res.statusCode, status, `${user}: ${res.body}`)
    assert.equal(res.json().error, error)
    assert.ok(res.headers['content-security-policy'], 'with the security headers')
  }

  // A body cut short of its Content-Length (the client gives up sending): over a real socket.
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const socket = connect(port, '127.0.0.1')
  socket.resume() // read the answer, or the socket never closes
  socket.on('error', () => {})
  socket.end('POST /checkout?user_id=short&item_id=7 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{}')
  await new Promise((resolve) => socket.on('close', resolve))

  const users = [...cases.map((c) => c.user), 'short']
  await waitFor('the cut-short body\'s invalid_request row for user \'short\'', async () => (await sql(app, 'SELECT 1 FROM checkout_attempts WHERE user_id = $1', ['short'])).length === 1, 5000).catch(() => {})
  const rows = await sql<{ user_id: string, item_id: number, outcome: string }>(app,
    'SELECT user_id, item_id, outcome FROM checkout_attempts WHERE user_id = ANY($1) ORDER BY id', [users])
  assert.deepEqual(rows, users.map((user) => ({ user_id: user, item_id: 7, outcome: 'invalid_request' })))
})
