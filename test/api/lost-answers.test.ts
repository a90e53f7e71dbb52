import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { test } from 'node:test'
import { waitFor } from '../support/fault-kit.js'
import { buildTestApp, checkout, isolatedConfig, purchase, sql, TestClock } from '../support/helpers.js'

const T0 = '2031-03-04T13:05:00.000Z'

/**
 * A request whose answer never reaches the client: sent over real HTTP, and the connection is
 * dropped right after the last byte, before the service has answered (it goes on and commits).
 */
function sendAndHangUp (port: number, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.end(`POST ${path} HTTP/1.1\r\nHost: flash-sale\r\nContent-Length: 0\r\n\r\n`, () => {
        socket.destroy()
        resolve()
      })
    })
    socket.on('error', reject)
  })
}

test('an answer lost after the commit: the retry of a checkout gets its code back and buys; the retry of a purchase names it', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))
  await app.listen({ host: '127.0.0.1', port: 0 })
  const port = (app.server.address() as { port: number }).port
  const rows = (text: string) => sql<{ n: number }>(app, text).then((r) => r[0]?.n ?? 0)

  await sendAndHangUp(port, '/checkout?user_id=dana&id=6')
  await waitFor('dana\'s accepted checkout row to commit', async () => await rows("SELECT count(*)::int AS n FROM checkout_attempts WHERE user_id = 'dana' AND outcome = 'accepted'") === 1, 5000)
  const retry = await checkout(app, 'user_id=dana&id=6')
  assert.equal(retry.statusCode, 409)
  assert.equal(retry.json().error, 'already_reserved_by_you')
  const [accepted] = await sql<{ code: string }>(app, "SELECT code FROM checkout_attempts WHERE user_id = 'dana' AND outcome = 'accepted'")
  assert.equal(retry.json().code, accepted?.code, 'the code of the checkout whose answer was lost')

  await sendAndHangUp(port, `/purchase?code=${retry.json().code as string}`)
  await waitFor('dana\'s purchase row to commit', async () => await rows("SELECT count(*)::int AS n FROM purchases WHERE user_id = 'dana'") === 1, 5000)
  const again = await purchase(app, retry.json().code)
  assert.equal(again.statusCode, 409)
  assert.equal(again.json().error, 'code_used')
  const [bought] = await sql<{ id: string }>(app, "SELECT id FROM purchases WHERE user_id = 'dana'")
  assert.equal(again.json().purchase_id, Number(bought?.id), 'the purchase whose answer was lost')

  // Each request read is one attempt row: the lost one and its retry.
  assert.deepEqual((await sql<{ outcome: string }>(app, "SELECT outcome FROM checkout_attempts WHERE user_id = 'dana' ORDER BY id")).map((r) => r.outcome),
    ['accepted', 'already_reserved_by_you'])
})
