import assert from 'node:assert/strict'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { query, startService } from '../support/fault-kit.js'
import { isolatedConfig } from '../support/helpers.js'

// The drain waits at most 1 s for busy keep-alive sockets to get their `Connection: close`
// answer: a promise about time, so it runs with the serial tests, not beside four other files on
// two cores (a CPU-starved run left a socket unanswered within that second, and its client reset).

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
