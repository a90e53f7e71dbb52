import assert from 'node:assert/strict'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { assertAcknowledgedAreCommitted, load, newAcks, query, startService, type Acks } from '../support/fault-kit.js'
import { isolatedConfig } from '../support/helpers.js'

/**
 * Real processes: the service runs as a child (the same entry as `npm start`, through tsx), and
 * the test kills it. Everything it acknowledged must be in Postgres afterwards.
 */

test('SIGKILL mid-load loses nothing acknowledged; after a restart nothing sells twice', async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: 300, USER_LIMIT: 10, CHECKOUT_TTL_SECONDS: 2 })
  const first = await startService(t, config)
  const acks: Acks = newAcks()
  const running = load(first.url, acks, 50, 300)
  await sleep(1500)
  first.child.kill('SIGKILL')
  await first.exited
  acks.stop = true
  await running
  assert.ok(acks.purchases.size > 10, `load made progress (${acks.purchases.size} purchases)`)
  await assertAcknowledgedAreCommitted(config, acks)

  // Restarted, the service sells what is left; reservations of the dead process expire (TTL 2 s),
  // and codes it redeemed in Redis without committing their purchase are undone once they stayed
  // unrecorded for 2 x (connect + query timeout + 1 s margin): 5 s with these bounds.
  const second = await startService(t, config, { env: { PG_CONNECT_TIMEOUT_MS: '500', PG_QUERY_TIMEOUT_MS: '1000' } })
  await sleep(2100)
  const after: Acks = newAcks()
  const selling = load(second.url, after, 50, 300)
  // Waits on Postgres, the record: Redis may count an orphan as sold until it is undone.
  const recorded = async () => (await query<{ n: number }>(config, 'SELECT count(*)::int AS n FROM purchases'))[0]?.n ?? 0
  for (let i = 0; i < 300 && await recorded() < 300; i++) await sleep(100)
  after.stop = true
  await selling
  await assertAcknowledgedAreCommitted(config, after)
  assert.equal(await recorded(), 300, 'the sale still sells out exactly: no reservation stuck forever')
  const { sale } = await (await fetch(second.url)).json() as { sale: { sold: number } }
  assert.equal(sale.sold, 300, 'and Redis agrees: no purchase of the dead process counted without its record')
})

test('SIGTERM under load: stops accepting, flushes every acknowledged write, exits 0 in time', async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: 5000, USER_LIMIT: 10 })
  const service = await startService(t, config)
  const acks: Acks = newAcks()
  const running = load(service.url, acks, 50, 5000)
  await sleep(1000)
  const signalled = Date.now()
  service.child.kill('SIGTERM')
  assert.equal(await service.exited, 0)
  assert.ok(Date.now() - signalled < 6000, `exited in ${Date.now() - signalled} ms`)
  acks.stop = true
  await running
  assert.ok(acks.codes.size > 10)
  await assertAcknowledgedAreCommitted(config, acks)
})
