import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import type { TestContext } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import type { Config } from '../../src/config.js'
import { assertAcknowledgedAreCommitted, assertNoUserOverLimit, newAcks, query, waitFor } from './fault-kit.js'
import { checkout, purchase } from './helpers.js'

export interface Failover {
  /** The Redis primary that holds the sale, and its replica that will be promoted. */
  primaryPort: number
  replicaPort: number
  /** SIGKILLs the primary. */
  killPrimary: () => Promise<void>
  /** True once the topology (sentinels, or the Cluster's nodes) serves the sale from the replica. */
  promoted: () => Promise<boolean>
}

const replicationOffset = async (redis: Redis, field: string): Promise<number> =>
  Number(new RegExp(`${field}:(\\d+)`).exec(await redis.info('replication'))?.[1])

/**
 * The failover promise, checked the same way on Sentinel and on Cluster: users reserve random
 * items of `app`'s sale and buy half of what they hold; replication to the replica is cut (the
 * primary drops its replica's link and takes a password the replica does not know) while the
 * primary keeps acknowledging decisions; the primary is SIGKILLed; once the replica is promoted
 * and decisions resumed, Postgres holds everything acknowledged, nothing sold twice, no user over
 * the limit, every code acknowledged before the kill buys exactly once, and Redis agrees with
 * Postgres on the number sold. `config` needs RATE_LIMIT_PER_USER 0 (users retry at once).
 */
export async function failoverUnderLoad (t: TestContext, config: Config, app: FastifyInstance, failover: Failover): Promise<void> {
  const acks = newAcks()
  const statuses = new Map<number, number>()
  const tally = (status: number) => statuses.set(status, (statuses.get(status) ?? 0) + 1)
  const load = Promise.all(Array.from({ length: 30 }, async (_, u) => {
    while (!acks.stop) {
      const res = await checkout(app, `user_id=u${u}&id=${1 + Math.floor(Math.random() * config.SALE_ITEMS)}`)
      tally(res.statusCode)
      if (res.statusCode === 503) await sleep(20)
      if (res.statusCode !== 200) continue
      const { code } = res.json()
      acks.codes.add(code)
      if (Math.random() < 0.5) continue
      const bought = await purchase(app, code)
      tally(bought.statusCode)
      if (bought.statusCode === 200) acks.purchases.set(code, bought.json().purchase_id)
    }
  }))
  await sleep(1000)

  const primary = new Redis(failover.primaryPort, '127.0.0.1', { maxRetriesPerRequest: 0, retryStrategy: () => null })
  primary.on('error', () => {})
  await primary.config('SET', 'requirepass', randomBytes(12).toString('hex'))
  await primary.call('CLIENT', 'KILL', 'TYPE', 'replica')
  await sleep(700)
  const primaryOffset = await replicationOffset(primary, 'master_repl_offset')
  const acknowledgedBeforeKill = new Set(acks.codes)
  await failover.killPrimary()
  primary.disconnect()
  const killedAt = Date.now()
  const replica = new Redis(failover.replicaPort, '127.0.0.1', { maxRetriesPerRequest: 0, retryStrategy: () => null })
  replica.on('error', () => {})
  const replicaOffset = await replicationOffset(replica, 'slave_repl_offset').finally(() => replica.disconnect())
  assert.ok(primaryOffset > replicaOffset, `the replica missed writes (primary at ${primaryOffset}, replica at ${replicaOffset})`)

  await waitFor('the replica to be promoted', failover.promoted, 20_000)
  const before = statuses.get(200) ?? 0
  await waitFor('20 more checkouts answered 200 after the failover', async () => (statuses.get(200) ?? 0) > before + 20, 30_000, () => Object.fromEntries(statuses))
  const recoveredMs = Date.now() - killedAt
  acks.stop = true
  await load
  t.diagnostic(`statuses ${JSON.stringify(Object.fromEntries(statuses))}; decisions resumed ${recoveredMs} ms after the kill`)
  assert.deepEqual([...statuses.keys()].filter((s) => s >= 500 && s !== 503), [], 'only 2xx, 4xx and 503')
  assert.ok(acknowledgedBeforeKill.size > 50, `load made progress (${acknowledgedBeforeKill.size} codes)`)

  await assertAcknowledgedAreCommitted(config, acks)
  await assertNoUserOverLimit(config, config.USER_LIMIT)

  // Bought ones answer code_used; the others buy now, once. A 503 did nothing ("retry shortly"):
  // on a starved host the rebuild after the failover can still be under way, so it is retried.
  const purchaseRetrying = async (code: string) => {
    for (let tries = 1; ; tries++) {
      const res = await purchase(app, code)
      if (res.statusCode !== 503 || tries === 20) return res
      await sleep(500)
    }
  }
  const redeemed = await Promise.all([...acknowledgedBeforeKill].map(async (code) => {
    const first = acks.purchases.has(code) ? null : (await purchaseRetrying(code)).statusCode
    return [first, (await purchaseRetrying(code)).json().error]
  }))
  assert.deepEqual(redeemed.filter(([first, again]) => (first !== null && first !== 200) || again !== 'code_used'), [],
    'each code acknowledged before the kill bought exactly once')

  const [recorded] = await query<{ n: number }>(config, 'SELECT count(*)::int AS n FROM purchases')
  assert.equal((await app.inject('/')).json().sale.sold, recorded?.n, 'Redis, rebuilt on the promoted replica, agrees with Postgres')
}
