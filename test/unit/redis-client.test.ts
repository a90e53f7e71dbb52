import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Cluster, Redis } from 'ioredis'
import { loadConfig } from '../../src/config.js'
import { createRedisClient, redisTopology } from '../../src/redis/client.js'

// Clients are built with lazyConnect: nothing here opens a connection.
const build = (env: Record<string, string>) => {
  const config = loadConfig({}, env)
  return { topology: redisTopology(config), client: createRedisClient(config, { lazyConnect: true, keyPrefix: 'p:' }) }
}

test('the topology follows the configuration, with ioredis\'s own clients', () => {
  const single = build({ REDIS_URL: 'redis://app:s3cret@cache.internal:6380' })
  assert.equal(single.topology, 'single')
  assert.ok(single.client instanceof Redis)
  assert.deepEqual([single.client.options.host, single.client.options.port, single.client.options.username, single.client.options.password, single.client.options.keyPrefix],
    ['cache.internal', 6380, 'app', 's3cret', 'p:'])

  const sentinel = build({ REDIS_URL: 'redis://:s3cret@ignored:1', REDIS_SENTINELS: 's1:26379,s2:26380', REDIS_SENTINEL_NAME: 'flashsale' })
  assert.equal(sentinel.topology, 'sentinel')
  assert.ok(sentinel.client instanceof Redis)
  assert.deepEqual(sentinel.client.options.sentinels, [{ host: 's1', port: 26379 }, { host: 's2', port: 26380 }])
  assert.deepEqual([sentinel.client.options.name, sentinel.client.options.password, sentinel.client.options.keyPrefix], ['flashsale', 's3cret', 'p:'])

  const cluster = build({ REDIS_URL: 'rediss://:s3cret@ignored:1', REDIS_CLUSTER_NODES: 'n1:7000,n2:7001' })
  assert.equal(cluster.topology, 'cluster')
  assert.ok(cluster.client instanceof Cluster)
  assert.equal(cluster.client.options.keyPrefix, 'p:', 'the prefix is set once, on the Cluster')
  assert.equal(cluster.client.options.redisOptions?.keyPrefix, undefined, 'not again on each node')
  assert.equal(cluster.client.options.redisOptions?.password, 's3cret')
  assert.deepEqual(cluster.client.options.redisOptions?.tls, {})
})
