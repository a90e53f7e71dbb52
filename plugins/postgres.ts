import fp from 'fastify-plugin'
import fastifyPostgres from '@fastify/postgres'
import type { Config } from '../src/config.js'
import { migrate } from '../src/migrate.js'

/** How long the client waits for a query: the server's statement_timeout plus a margin. */
export const clientQueryTimeoutMs = (config: Config): number => config.PG_QUERY_TIMEOUT_MS + 1000

/**
 * The system of record: a bounded pg pool (callers never queue forever) on `fastify.pg`,
 * with migrations applied before the app is ready.
 */
export default fp(async (fastify) => {
  const { config } = fastify
  await fastify.register(fastifyPostgres, {
    connectionString: config.DATABASE_URL,
    options: `-c search_path=${config.DATABASE_SCHEMA} -c idle_in_transaction_session_timeout=${config.PG_QUERY_TIMEOUT_MS}`,
    max: config.PG_POOL_MAX,
    connectionTimeoutMillis: config.PG_CONNECT_TIMEOUT_MS,
    // The server cancels a statement past the deadline (so a purchase the client gave up on cannot
    // commit later behind its back); the client-side timeout is the fallback when the server is gone.
    statement_timeout: config.PG_QUERY_TIMEOUT_MS,
    query_timeout: clientQueryTimeoutMs(config),
    application_name: 'flash-sale'
  })
  // A pool client that loses its server emits 'error' on the pool; without a listener it crashes the process.
  fastify.pg.pool.on('error', (err) => fastify.log.warn({ err }, 'postgres connection lost'))

  const client = await fastify.pg.connect()
  try {
    await migrate(client, config.DATABASE_SCHEMA, (msg) => fastify.log.debug(msg))
  } finally {
    client.release()
  }
}, { name: 'postgres', dependencies: ['config'] })
