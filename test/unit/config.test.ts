import assert from 'node:assert/strict'
import { test } from 'node:test'
import { loadConfig } from '../../src/config.js'

test('defaults point at the local services', () => {
  const config = loadConfig({}, {})
  assert.equal(config.DATABASE_URL, 'postgres://postgres@127.0.0.1:5432/postgres')
  assert.equal(config.REDIS_URL, 'redis://127.0.0.1:6379')
  assert.equal(config.SALE_ITEMS, 10_000)
  assert.equal(config.USER_LIMIT, 10)
  assert.equal(config.CHECKOUT_TTL_SECONDS, 600)
})

test('environment strings are coerced and validated', () => {
  assert.equal(loadConfig({}, { PORT: '8080', SALE_ITEMS: '200' }).SALE_ITEMS, 200)
})

test('a bad variable is named in the error', () => {
  for (const [name, value] of [['PORT', 'eighty'], ['DATABASE_URL', 'mysql://x'], ['USER_LIMIT', '0'], ['LOG_LEVEL', 'loud'], ['REDIS_URL', 'localhost'], ['REDIS_SENTINELS', 'host-without-port'], ['REDIS_CLUSTER_NODES', '10.0.0.1:6379;10.0.0.2:6379'], ['REDIS_KEY_PREFIX', 'x{tag}:']]) {
    assert.throws(() => loadConfig({}, { [name as string]: value }), new RegExp(`env/${name}`), name)
  }
})

test('Redis topology: Sentinel or Cluster addresses are host:port lists, and at most one is set', () => {
  const sentinel = loadConfig({}, { REDIS_SENTINELS: 'redis-a:26379,10.0.0.2:26380', REDIS_SENTINEL_NAME: 'flashsale' })
  assert.equal(sentinel.REDIS_SENTINELS, 'redis-a:26379,10.0.0.2:26380')
  assert.equal(loadConfig({}, {}).REDIS_SENTINEL_NAME, 'mymaster')
  assert.equal(loadConfig({}, { REDIS_CLUSTER_NODES: '127.0.0.1:7000' }).REDIS_CLUSTER_NODES, '127.0.0.1:7000')
  assert.throws(() => loadConfig({}, { REDIS_SENTINELS: 'a:26379', REDIS_CLUSTER_NODES: 'b:7000' }),
    /env\/REDIS_SENTINELS and env\/REDIS_CLUSTER_NODES are exclusive/)
})
