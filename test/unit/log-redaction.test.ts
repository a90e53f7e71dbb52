import assert from 'node:assert/strict'
import { test } from 'node:test'
import pg from 'pg'
import { buildApp } from '../../src/app.js'
import { isolatedConfig, TestClock } from '../support/helpers.js'

test('checkout codes never reach the logs: request logs (LOG_REQUESTS=true) and error logs', async (t) => {
  const lines: string[] = []
  const config = isolatedConfig(t, { LOG_LEVEL: 'info', LOG_REQUESTS: true })
  const app = await buildApp(config, { now: new TestClock(Date.parse('2031-03-04T13:10:00.000Z')).now, logStream: { write: (line) => { lines.push(line) } } })
  t.after(() => app.close())
  await app.ready()

  const { code } = (await app.inject({ method: 'POST', url: '/checkout?user_id=alice&id=1' })).json() as { code: string }
  assert.equal((await app.inject({ method: 'POST', url: `/purchase?code=${code}` })).statusCode, 200)
  assert.equal((await app.inject({ method: 'POST', url: `/purchase?code=${code}` })).json().error, 'code_used')
  const requestLogs = lines.filter((line) => line.includes('/purchase'))
  assert.ok(requestLogs.length >= 2, 'the purchases were logged')
  assert.ok(requestLogs.some((line) => line.includes('/purchase?code=[redacted]')), 'the URL is logged with the code redacted')

  // Error logs: the service logs the code it failed on (src/sale/purchase.ts), and Postgres names it in
  // a constraint violation's detail; a real one here, from inserting the committed code again.
  const duplicate = await app.pg.query('INSERT INTO checkout_attempts (sale_id, sale_starts_at, user_id, item_id, outcome, code, expires_at, attempted_at) SELECT sale_id, sale_starts_at, user_id, item_id, outcome, code, expires_at, attempted_at FROM checkout_attempts WHERE code = $1', [code])
    .then(() => null, (err: unknown) => err as pg.DatabaseError)
  assert.ok(duplicate instanceof pg.DatabaseError && duplicate.detail?.includes(code), 'Postgres named the code in its error')
  app.log.error({ err: duplicate, code }, 'could not put back an unrecorded purchase')
  const errorLog = lines.at(-1) ?? ''
  assert.match(errorLog, /"code":"\[redacted\]"/)
  assert.match(errorLog, /\(code, sale_starts_at\)=\(\[redacted\], /)

  for (const line of lines) assert.ok(!line.includes(code), `no log line carries the code: ${line}`)
})
