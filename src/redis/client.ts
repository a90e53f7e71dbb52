import { Cluster, Redis, type RedisOptions } from 'ioredis'
import type { Config } from '../config.js'

/** A client for any of the three topologies; both classes share ioredis's command interface. */
export type RedisClient = Redis | Cluster

export type RedisTopology = 'single' | 'sentinel' | 'cluster'

export const redisTopology = (config: Config): RedisTopology =>
  config.REDIS_CLUSTER_NODES !== '' ? 'cluster' : config.REDIS_SENTINELS !== '' ? 'sentinel' : 'single'

/** `host:port,host:port` -> ioredis node addresses. */
export const parseHostPorts = (list: string): Array<{ host: string, port: number }> =>
  list.split(',').map((pair) => {
    const at = pair.lastIndexOf(':')
    return { host: pair.slice(0, at), port: Number(pair.slice(at + 1)) }
  })

/** User, password and TLS of REDIS_URL: they apply to the data nodes of every topology. */
function credentialsOf (url: string): Pick<RedisOptions, 'username' | 'password' | 'tls'> {
  const parsed = new URL(url)
  return {
    ...(parsed.username !== '' && { username: decodeURIComponent(parsed.username) }),
    ...(parsed.password !== '' && { password: decodeURIComponent(parsed.password) }),
    ...(parsed.protocol === 'rediss:' && { tls: {} })
  }
}

/**
 * The one place a Redis client is built, for the service and the operator commands alike, from
 * the configured topology with ioredis's own clients: `new Redis(url)` for a single server,
 * `new Redis({ sentinels, name })` (asks the sentinels for the current primary and follows a
 * failover), or `new Cluster(nodes)` (routes each command, EVALSHA included, by its first key's
 * slot). `options` apply to the data connections (per node on a Cluster); the key prefix is set
 * once on the client, so keys keep their `{sale:<id>:<token>}` hash tag whatever the prefix.
 */
export function createRedisClient (config: Config, options: RedisOptions = {}): RedisClient {
  const { keyPrefix, enableAutoPipelining, enableOfflineQueue, lazyConnect, retryStrategy, ...perConnection } = { ...credentialsOf(config.REDIS_URL), ...options }
  const client = { keyPrefix, enableAutoPipelining, enableOfflineQueue, lazyConnect }
  const connection: RedisOptions = { ...perConnection, ...client, ...(retryStrategy !== undefined && { retryStrategy }) }
  switch (redisTopology(config)) {
    case 'cluster':
      return new Cluster(parseHostPorts(config.REDIS_CLUSTER_NODES), {
        ...client,
        // A Cluster reconnects as a whole (its nodes are rediscovered): the same strategy applies.
        ...(retryStrategy !== undefined && { clusterRetryStrategy: retryStrategy }),
        redisOptions: perConnection
      })
    case 'sentinel':
      return new Redis({
        ...connection,
        sentinels: parseHostPorts(config.REDIS_SENTINELS),
        name: config.REDIS_SENTINEL_NAME,
        // Asking the sentinels is part of (re)connecting: the same strategy applies.
        ...(typeof retryStrategy === 'function' && { sentinelRetryStrategy: retryStrategy }),
        // Listen for +switch-master on the sentinels: reconnect to a new primary at once.
        failoverDetector: true
      })
    case 'single':
      return new Redis(config.REDIS_URL, connection)
  }
}

/** The data nodes to scan or probe one by one: every primary of a Cluster, else the client itself. */
export const primaries = (client: RedisClient): Redis[] =>
  client instanceof Cluster ? client.nodes('master') : [client]
