import assert from 'node:assert/strict'
import type { Server } from 'node:http'
import { connect } from 'node:net'
import { test } from 'node:test'
import type { FastifyHttpOptions } from 'fastify'
import { buildApp } from '../../src/app.js'
import { buildTestApp, isolatedConfig, TestClock } from '../support/helpers.js'

/** The security headers and the API's error shape, on an answer written below Fastify. */
function assertApiError (name: string, res: RawResponse, status: number, code: string) {
  assert.equal(res.status, status, `${name}: status (${res.body})`)
  const body = JSON.parse(res.body) as Record<string, unknown>
  assert.deepEqual(Object.keys(body).sort(), ['error', 'message'], `${name}: the API's shape`)
  assert.equal(body.error, code, `${name}: stable code`)
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/, name)
  assert.equal(res.headers.get('content-security-policy'), "default-src 'none';frame-ancestors 'none'", `${name}: CSP`)
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff', `${name}: nosniff`)
  assert.ok(res.headers.has('strict-transport-security'), `${name}: HSTS`)
  assert.equal(res.headers.get('x-frame-options'), 'DENY', `${name}: no framing`)
}

interface RawResponse { status: number, headers: Map<string, string>, body: string }

/**
 * Sends `request` as raw bytes (what no HTTP client library would send) and reads the answer until
 * the server closes. `halfClose` ends our side after sending, as a client whose upload broke off.
 */
function raw (port: number, request: string | Buffer, halfClose = false): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    socket.setTimeout(5000, () => socket.destroy(new Error('no answer in 5 s')))
    socket.on('data', (chunk) => chunks.push(chunk))
    socket.on('error', reject)
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8')
      const [head = '', body = ''] = text.split('\r\n\r\n', 2)
      const [statusLine = '', ...lines] = head.split('\r\n')
      const headers = new Map(lines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]))
      resolve({ status: Number(statusLine.split(' ')[1]), headers, body })
    })
    socket.write(request, () => { if (halfClose) socket.end() })
  })
}

test("Node's HTTP parser errors answer in the API's error shape with the security headers", async (t) => {
  const config = isolatedConfig(t)
  const app = await buildTestApp(t, config, new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }

  const cases: Array<[string, string | Buffer, boolean, number, string]> = [
    ['Content-Length: abc', 'POST /checkout?user_id=a&id=1 HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n', false, 400, 'invalid_content_length'],
    ['Content-Length and chunked together', 'POST /purchase HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', false, 400, 'bad_request'],
    ['bad chunked encoding', 'POST /purchase HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n', false, 400, 'bad_request'],
    ['a truncated body', 'POST /purchase HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n{"checkout_code":', true, 400, 'bad_request'],
    ['a garbage request line', 'HELLO THERE\r\n\r\n', false, 400, 'bad_request'],
    ['a 100 KB header', `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(100_000)}\r\n\r\n`, false, 431, 'headers_too_large']
  ]
  for (const [name, request, halfClose, status, code] of cases) {
    assertApiError(name, await raw(port, request, halfClose), status, code)
  }

  // The server is unharmed: a well-formed request on a new connection is answered normally.
  const ok = await raw(port, 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  assert.equal(ok.status, 200)
})

test('a request that does not arrive in time gets 408 request_timeout in the same shape', async (t) => {
  const config = isolatedConfig(t)
  // The service waits 30 s; this one 300 ms, checked every 100 ms, so the test is short.
  const shortTimeout: FastifyHttpOptions<Server> = { requestTimeout: 300, http: { connectionsCheckingInterval: 100 } }
  const app = await buildApp(config, { now: new TestClock(Date.parse('2031-03-04T13:10:00.000Z')).now, fastify: shortTimeout })
  t.after(() => app.close())
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = app.server.address() as { port: number }
  // Headers begun and never finished, as a slowloris client does.
  assertApiError('slow headers', await raw(port, 'GET /health HTTP/1.1\r\nHost: x\r\n'), 408, 'request_timeout')
})
