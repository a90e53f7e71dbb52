import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { test } from 'node:test'
import { pino } from 'pino'
import { loggerOptions } from '../../src/logger.js'

/** A pino logger with the service's options, writing into an array of parsed lines. */
function capture (level: string) {
  const lines: Array<Record<string, unknown>> = []
  const sink = new Writable({ write (chunk: Buffer, _encoding, done) { lines.push(JSON.parse(chunk.toString())); done() } })
  return { log: pino(loggerOptions({ LOG_LEVEL: level as 'info' }), sink), lines }
}

test('the service logger redacts secret headers and keeps the rest', () => {
  const { log, lines } = capture('info')
  log.info({
    req: { method: 'POST', url: '/checkout', headers: { authorization: 'Bearer s3cret', 'proxy-authorization': 'Basic eDp5', cookie: 'sid=abc', 'user-agent': 'curl' } },
    res: { statusCode: 200, headers: { 'set-cookie': 'sid=def' } }
  }, 'request')
  log.warn({ headers: { authorization: 'Bearer s3cret', host: 'x' } }, 'headers logged on their own')
  const text = JSON.stringify(lines)
  for (const secret of ['s3cret', 'eDp5', 'sid=abc', 'sid=def']) assert.ok(!text.includes(secret), `${secret} is not logged`)
  const [request, warning] = lines as [Record<string, any>, Record<string, any>]
  assert.deepEqual(request.req.headers, { authorization: '[redacted]', 'proxy-authorization': '[redacted]', cookie: '[redacted]', 'user-agent': 'curl' })
  assert.equal(request.res.headers['set-cookie'], '[redacted]')
  assert.deepEqual(warning.headers, { authorization: '[redacted]', host: 'x' })
})

test('the service logger options carry the checkout-code filter (src/log-redaction.ts)', () => {
  const { log, lines } = capture('info')
  log.info({ req: { url: '/purchase?code=q1mHh2p1oN2wq0mVf3c3Zw' } }, 'request')
  assert.equal((lines[0] as { req: { url: string } }).req.url, '/purchase?code=[redacted]')
})

test('LOG_LEVEL sets the level', () => {
  const { log, lines } = capture('warn')
  log.info('not shown')
  log.warn('shown')
  assert.deepEqual(lines.map((line) => line.msg), ['shown'])
})
