import assert from 'node:assert/strict'
import { get } from 'node:http'
import { test } from 'node:test'
import { createRedisClient, primaries } from '../../src/redis/client.js'
import { saleKeys, saleTag } from '../../src/sale/sale.js'
import { redisCommand, startCluster } from '../support/redis-kit.js'
import { stampede, stampedeConfig } from '../support/stampede.js'
import { buildTestApp, checkout, isolatedConfig, purchase, sql, TestClock } from '../support/helpers.js'

/**
 * The service on a 3-primary Redis Cluster (REDIS_CLUSTER_NODES) started by the test: the core
 * flows, the abuse limit, the sale page feed, a rebuild after the cluster lost the sale, a sale's
 * keys on one slot, and the 500-user stampede.
 */

test('on a Redis Cluster: core flows, rate limit, feed, rebuild; a sale\'s keys share one slot', async (t) => {
  const cluster = await startCluster(t)
  const config = isolatedConfig(t, { REDIS_CLUSTER_NODES: cluster.nodes, SALE_ITEMS: 10, USER_LIMIT: 2, RATE_LIMIT_PER_USER: 5 })
  const app = await buildTestApp(t, config, new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))

  const alice = (await checkout(app, 'user_id=alice&id=1')).json()
  assert.equal((await checkout(app, 'user_id=bob&id=1')).json().error, 'item_reserved')
  assert.equal((await purchase(app, alice.code)).statusCode, 200)
  assert.equal((await purchase(app, alice.code)).json().error, 'code_used')
  assert.equal((await checkout(app, 'user_id=bob&id=1')).json().error, 'item_sold')
  assert.equal((await checkout(app, 'user_id=bob&id=11')).json().error, 'unknown_item')
  const held = (await checkout(app, 'user_id=alice&id=2')).json().code
  assert.equal((await checkout(app, 'user_id=alice&id=3')).json().error, 'user_limit_reached')

  // The abuse limit counts in the Cluster too: carol's 6th checkout in the window is refused.
  const carol = await Promise.all(Array.from({ length: 6 }, () => checkout(app, 'user_id=carol&id=11')))
  assert.deepEqual(carol.map((r) => r.statusCode).sort(), [404, 404, 404, 404, 404, 429])

  const sale = (await app.inject('/')).json().sale
  assert.deepEqual([sale.sold, sale.held, sale.left], [1, 1, 8])

  // The sale page feed's first snapshot comes from the Cluster as well.
  const base = await app.listen({ host: '127.0.0.1', port: 0 })
  const snapshot = await new Promise<string>((resolve, reject) => {
    const request = get(`${base}/sale/events`, (res) => {
      let text = ''
      res.on('data', (chunk: Buffer) => {
        text += chunk.toString()
        if (/data:.*\n\n/.test(text)) {
          request.destroy()
          resolve(text)
        }
      })
    }).once('error', reject)
  })
  assert.match(snapshot, /"sold":1,"held":1,"left":8/)

  // Every decision key of the sale, with the test's key prefix, hashes to one slot, and that
  // slot's primary holds all of them: one script sees the whole sale.
  const [row] = await sql<{ token: string }>(app, 'SELECT token FROM sales WHERE id = $1', [sale.id])
  const prefixed = saleKeys(saleTag(sale.id, row?.token as string)).map((key) => `${config.REDIS_KEY_PREFIX}${key}`)
  const slots = await Promise.all(prefixed.map((key) => redisCommand(cluster.ports[0] as number, 'CLUSTER', 'KEYSLOT', key)))
  assert.equal(new Set(slots).size, 1, `one slot for ${prefixed.join(', ')}: ${slots.join(', ')}`)
  const holders = await Promise.all(cluster.ports.map(async (port) =>
    Number(await redisCommand(port, 'CLUSTER', 'COUNTKEYSINSLOT', String(slots[0])))))
  const owners = cluster.ports.filter((_port, i) => (holders[i] ?? 0) > 0)
  assert.equal(owners.length, 1, `one node holds the slot's keys (${holders.join(', ')})`)
  assert.equal(await redisCommand(owners[0] as number, 'EXISTS', ...prefixed), prefixed.length, 'all six, on that node')

  // The Cluster loses everything of this test (every primary scanned): the sale comes back from Postgres.
  const admin = createRedisClient(config, { lazyConnect: true })
  await admin.connect()
  let lost = 0
  for (const node of primaries(admin)) {
    const keys = await node.keys(`${config.REDIS_KEY_PREFIX}*`)
    for (const key of keys) lost += await node.del(key)
  }
  admin.disconnect()
  assert.ok(lost >= 6, `deleted ${lost} keys`)
  assert.equal((await checkout(app, 'user_id=bob&id=1')).json().error, 'item_sold', 'sold stays sold')
  assert.equal((await checkout(app, 'user_id=bob&id=2')).json().error, 'item_reserved', 'held stays held')
  assert.equal((await purchase(app, held)).statusCode, 200, 'a code acknowledged before the loss still buys')
})

test('on a Redis Cluster: 500 users stampede a sale, it sells out exactly', async (t) => {
  const cluster = await startCluster(t)
  await stampede(t, stampedeConfig(t, { REDIS_CLUSTER_NODES: cluster.nodes }))
})
