import { test } from 'node:test'
import { kill } from '../support/fault-kit.js'
import { failoverUnderLoad } from '../support/failover-scenario.js'
import { buildTestApp, checkout, isolatedConfig, sql, TestClock } from '../support/helpers.js'
import { slotOwners, startCluster } from '../support/redis-kit.js'
import { saleKeys, saleTag } from '../../src/sale/sale.js'

test('Cluster failover under load: the shard\'s promoted replica lacked acknowledged writes, nothing acknowledged is lost', async (t) => {
  const cluster = await startCluster(t, 1)
  const config = isolatedConfig(t, {
    REDIS_CLUSTER_NODES: cluster.nodes,
    SALE_ITEMS: 5000,
    USER_LIMIT: 1000,
    // In-process users retry at once; the abuse limit would only spin them on 429s.
    RATE_LIMIT_PER_USER: 0
  })
  const app = await buildTestApp(t, config, new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))
  await checkout(app, 'user_id=warmup&id=1')
  const { id, token } = (await sql<{ id: number, token: string }>(app, 'SELECT id::int AS id, token FROM sales'))[0] as { id: number, token: string }
  const meta = `${config.REDIS_KEY_PREFIX}${saleKeys(saleTag(id, token))[0] as string}`
  const { primary, replicas: [replica] } = await slotOwners(cluster.ports[0] as number, meta)
  if (replica === undefined) throw new Error('the sale\'s shard has no replica')
  const witness = cluster.ports.find((port) => port !== primary && port !== replica) as number
  await failoverUnderLoad(t, config, app, {
    primaryPort: primary,
    replicaPort: replica,
    killPrimary: () => kill(cluster.processes.get(primary) as NonNullable<ReturnType<typeof cluster.processes.get>>),
    promoted: async () => (await slotOwners(witness, meta)).primary === replica
  })
})
