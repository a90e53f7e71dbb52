import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildApp } from '../src/app.js'
import { query, startService } from './fault-kit.js'
import { isolatedConfig } from './helpers.js'

test('a request that arrives while the service drains gets the 503 shape with Retry-After, and the in-flight one finishes', async (t) => {
  const app = await buildApp(isolatedConfig(t))
  t.after(() => app.close())
  // Stands for any request still in flight when close() starts.
  app.get('/slow', async () => { await sleep(300); return { done: true } })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }

  // One keep-alive socket: a slow request, then close() starts, then a second request on the same
  // socket (it is busy, so the drain keeps it open; a client reusing its connection does this).
  const socket = connect(port, '127.0.0.1')
  let raw = ''
  socket.on('data', (chunk) => { raw += chunk })
  const ended = new Promise((resolve) => socket.on('close', resolve))
  socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n')
  await sleep(50)
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

test('SIGTERM under keep-alive load: every request the service read is answered (no reset), and every checkout answered is a row', async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: 5000, USER_LIMIT: 1000 })
  const service = await startService(t, config, { env: { RATE_LIMIT_PER_USER: '0' } })
  const answered = new Map<number, number>()
  const failures = new Map<string, number>()
  let signalled = false
  await Promise.all([
    ...Array.from({ length: 64 }, async (_, u) => {
      for (;;) {
        try {
          const res = await fetch(`${service.url}/checkout?user_id=u${u}&id=${1 + Math.floor(Math.random() * 5000)}`, { method: 'POST' })
          await res.arrayBuffer()
          answered.set(res.status, (answered.get(res.status) ?? 0) + 1)
        } catch (error) {
          const cause = (error as { cause?: { code?: string } }).cause
          // Refused: the connection was never accepted, so nothing was read. Only after the signal.
          if (cause?.code === 'ECONNREFUSED' && signalled) return
          failures.set(cause?.code ?? String(error), (failures.get(cause?.code ?? String(error)) ?? 0) + 1)
          if (signalled) return
        }
      }
    }),
    (async () => {
      await sleep(1000)
      signalled = true
      service.child.kill('SIGTERM')
    })()
  ])
  assert.equal(await service.exited, 0)
  assert.deepEqual(Object.fromEntries(failures), {}, `no request lost its answer (answered: ${JSON.stringify(Object.fromEntries(answered))})`)
  assert.ok((answered.get(503) ?? 0) > 0, 'requests read during the drain were answered 503')
  const [rows] = await query<{ n: number }>(config, 'SELECT count(*)::int AS n FROM checkout_attempts')
  const responses = [...answered.values()].reduce((a, b) => a + b, 0)
  assert.equal(rows?.n, responses, 'one row per checkout answered, the drain\'s 503s included')
})
