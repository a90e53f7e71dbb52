import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildApp } from '../../src/app.js'
import { isolatedConfig } from '../support/helpers.js'

test('a request that arrives while the service drains gets the 503 shape with Retry-After, and the in-flight one finishes', async (t) => {
  const app = await buildApp(isolatedConfig(t))
  t.after(() => app.close())
  // Stands for any request still in flight when close() starts.
  let slowStarted: () => void = () => {}
  const inFlight = new Promise<void>((resolve) => { slowStarted = resolve })
  app.get('/slow', async () => { slowStarted(); await sleep(300); return { done: true } })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }

  // One keep-alive socket: a slow request, then close() starts, then a second request on the same
  // socket (it is busy, so the drain keeps it open; a client reusing its connection does this).
  const socket = connect(port, '127.0.0.1')
  let raw = ''
  socket.on('data', (chunk) => { raw += chunk })
  const ended = new Promise((resolve) => socket.on('close', resolve))
  socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n')
  // Only once the service has the request: a connection still in the listen queue when close()
  // starts is reset by the kernel (seen on a starved CI host), which is not what this test is about.
  await inFlight
  const closed = app.close()
  await sleep(50)
  socket.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n')
  await ended
  await closed

  const [first, second] = raw.split(/(?=HTTP\/1\.1 )/)
  assert.match(first ?? '', /^HTTP\/1\.1 200 [\s\S]*\{"done":true\}$/)
  assert.match(second ?? '', /^HTTP\/1\.1 503 /)
  assert.match(second ?? '', /\r\nretry-after: 1\r\n/i)
  assert.match(second ?? '', /\r\ncontent-security-policy: /i, 'security headers too')
  assert.deepEqual(JSON.parse((second ?? '').split('\r\n\r\n')[1] ?? ''), { error: 'service_unavailable', message: 'The service is shutting down; retry shortly.' })
})
