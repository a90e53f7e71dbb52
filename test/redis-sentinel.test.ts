import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { assertAcknowledgedAreCommitted, kill, newAcks, query, waitFor } from './fault-kit.js'
import { buildTestApp, checkout, isolatedConfig, purchase, TestClock } from './helpers.js'
import { redisCommand, startSentinels } from './redis-kit.js'

const ITEMS = 5000
const USERS = 30

const replicationOffset = async (port: number, field: string): Promise<number> =>
  Number(new RegExp(`${field}:(\\d+)`).exec(String(await redisCommand(port, 'INFO', 'replication')))?.[1])

test('Sentinel failover under load: the promoted replica lacked acknowledged writes, nothing acknowledged is lost', async (t) => {
  const group = await startSentinels(t)
  const config = isolatedConfig(t, {
    REDIS_SENTINELS: group.sentinels,
    REDIS_SENTINEL_NAME: group.name,
    SALE_ITEMS: ITEMS,
    USER_LIMIT: 1000,
    // In-process users retry at once; the abuse limit would only spin them on 429s.
    RATE_LIMIT_PER_USER: 0
  })
  const app = await buildTestApp(t, config, new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))

  // Users reserve random items and buy half of what they hold, through the failover.
  const acks = newAcks()
  const statuses = new Map<number, number>()
  const load = Promise.all(Array.from({ length: USERS }, async (_, u) => {
    while (!acks.stop) {
      const res = await checkout(app, `user_id=u${u}&id=${1 + Math.floor(Math.random() * ITEMS)}`)
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
      if (res.statusCode === 503) await sleep(20)
      if (res.statusCode !== 200) continue
      const { code } = res.json()
      acks.codes.add(code)
      if (Math.random() < 0.5) continue
      const bought = await purchase(app, code)
      statuses.set(bought.statusCode, (statuses.get(bought.statusCode) ?? 0) + 1)
      if (bought.statusCode === 200) acks.purchases.set(code, bought.json().purchase_id)
    }
  }))
  await sleep(1000)

  // Replication falls behind for good: the primary drops its replica's link and, with a password
  // the replica does not know, refuses it back, while it keeps acknowledging decisions.
  const primary = new Redis(group.primary.port, '127.0.0.1', { maxRetriesPerRequest: 0, retryStrategy: () => null })
  primary.on('error', () => {})
  await primary.config('SET', 'requirepass', randomBytes(12).toString('hex'))
  await primary.call('CLIENT', 'KILL', 'TYPE', 'replica')
  await sleep(700)
  const primaryOffset = Number(/master_repl_offset:(\d+)/.exec(await primary.info('replication'))?.[1])
  const acknowledgedBeforeKill = new Set(acks.codes)
  await kill(group.primary.process)
  primary.disconnect()
  const killedAt = Date.now()
  const replicaOffset = await replicationOffset(group.replica.port, 'slave_repl_offset')
  assert.ok(primaryOffset > replicaOffset, `the replica missed writes (primary at ${primaryOffset}, replica at ${replicaOffset})`)

  // The sentinels promote the replica; the service follows and decides again within seconds.
  const promoted = async () => {
    const [, port] = await redisCommand(group.sentinelPorts[0] as number, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', group.name) as [string, string]
    return Number(port) === group.replica.port
  }
  await waitFor(promoted, 20_000)
  const before = statuses.get(200) ?? 0
  await waitFor(async () => (statuses.get(200) ?? 0) > before + 20, 15_000)
  const recoveredMs = Date.now() - killedAt
  acks.stop = true
  await load
  t.diagnostic(`statuses ${JSON.stringify(Object.fromEntries(statuses))}; decisions resumed ${recoveredMs} ms after the kill`)
  assert.deepEqual([...statuses.keys()].filter((s) => s >= 500 && s !== 503), [], 'only 2xx, 4xx and 503')
  assert.ok(acknowledgedBeforeKill.size > 50, `load made progress (${acknowledgedBeforeKill.size} codes)`)

  // Postgres holds everything acknowledged, no item sold twice, no user over the limit.
  await assertAcknowledgedAreCommitted(config, acks)
  const [overLimit] = await query<{ n: number }>(config,
    'SELECT count(*)::int AS n FROM (SELECT user_id FROM purchases GROUP BY user_id HAVING count(*) > 1000) o')
  assert.equal(overLimit?.n, 0)

  // Every code acknowledged before the kill redeems exactly once: bought ones answer code_used,
  // the others buy now, once.
  const second = await Promise.all([...acknowledgedBeforeKill].map(async (code) => {
    const first = acks.purchases.has(code) ? null : (await purchase(app, code)).statusCode
    return [first, (await purchase(app, code)).json().error]
  }))
  assert.deepEqual(second.filter(([first, again]) => (first !== null && first !== 200) || again !== 'code_used'), [],
    'each acknowledged code bought exactly once')

  // Redis (the promoted replica, rebuilt from Postgres) agrees with Postgres.
  const [recorded] = await query<{ n: number }>(config, 'SELECT count(*)::int AS n FROM purchases')
  assert.equal((await app.inject('/')).json().sale.sold, recorded?.n)
})
