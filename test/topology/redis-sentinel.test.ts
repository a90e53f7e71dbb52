import { test } from 'node:test'
import { kill, missingTool } from '../support/fault-kit.js'
import { failoverUnderLoad } from '../support/failover-scenario.js'
import { buildTestApp, isolatedConfig, TestClock } from '../support/helpers.js'
import { redisCommand, startSentinels } from '../support/redis-kit.js'

test('Sentinel failover under load: the promoted replica lacked acknowledged writes, nothing acknowledged is lost', { skip: missingTool('redis-sentinel') }, async (t) => {
  const group = await startSentinels(t)
  const config = isolatedConfig(t, {
    REDIS_SENTINELS: group.sentinels,
    REDIS_SENTINEL_NAME: group.name,
    SALE_ITEMS: 5000,
    USER_LIMIT: 1000,
    // In-process users retry at once; the abuse limit would only spin them on 429s.
    RATE_LIMIT_PER_USER: 0
  })
  const app = await buildTestApp(t, config, new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))
  await failoverUnderLoad(t, config, app, {
    primaryPort: group.primary.port,
    replicaPort: group.replica.port,
    killPrimary: () => kill(group.primary.process),
    promoted: async () => {
      const [, port] = await redisCommand(group.sentinelPorts[0] as number, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', group.name) as [string, string]
      return Number(port) === group.replica.port
    }
  })
})
