import pg from 'pg'
import type { Config } from '../config.js'
import { createRedisClient, primaries } from '../redis/client.js'

/**
 * Removes what a scratch configuration (its own DATABASE_SCHEMA and REDIS_KEY_PREFIX) left behind:
 * `npm run openapi` and each test file use one. Both stores are tried even if one is unreachable
 * (a test may have stopped its own dedicated server); the first failure is thrown afterwards.
 */
export async function dropScratch (config: Config): Promise<void> {
  const failures: unknown[] = []
  const client = new pg.Client({ connectionString: config.DATABASE_URL })
  try {
    await client.connect()
    await client.query(`DROP SCHEMA IF EXISTS ${config.DATABASE_SCHEMA} CASCADE`)
  } catch (error) {
    failures.push(error)
  } finally {
    await client.end().catch(() => {})
  }
  // Never retry: a server that is gone holds nothing to clean.
  const redis = createRedisClient(config, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
  redis.on('error', () => {})
  try {
    await redis.connect()
    // Every primary of a Cluster holds some of the keys; one key per DEL (they span slots).
    for (const node of primaries(redis)) {
      for await (const keys of node.scanStream({ match: `${config.REDIS_KEY_PREFIX}*`, count: 1000 }) as AsyncIterable<string[]>) {
        if (keys.length > 0) await Promise.all(keys.map((key) => node.del(key)))
      }
    }
  } catch (error) {
    failures.push(error)
  } finally {
    redis.disconnect()
  }
  if (failures.length > 0) throw failures[0]
}
