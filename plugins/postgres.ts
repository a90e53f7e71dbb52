import fp from 'fastify-plugin'
import fastifyPostgres from '@fastify/postgres'
import type { Config } from '../src/config.js'
import { connectDirect } from '../src/db/direct-client.js'
import { migrate } from '../src/db/migrate.js'

/** How long the client waits for a query: the server's statement_timeout plus a margin. */
export const clientQueryTimeoutMs = (config: Config): number => config.PG_QUERY_TIMEOUT_MS + 1000

/**
 * The system of record: a bounded pg pool (callers never queue forever) on `fastify.pg`,
 * with migrations applied before the app is ready.
 */
export default fp(async (fastify) => {
  const { config } = fastify
  // Behind a transaction-mode pooler the session settings come from the pooler (checked below).
  const sessionSettings = config.DATABASE_POOL_MODE === 'transaction'
    ? {}
    : {
        options: `-c search_path=${config.DATABASE_SCHEMA} -c idle_in_transaction_session_timeout=${config.PG_QUERY_TIMEOUT_MS}`,
        // The server cancels a statement past the deadline (so a purchase the client gave up on cannot
        // commit later behind its back); the client-side timeout is the fallback when the server is gone.
        statement_timeout: config.PG_QUERY_TIMEOUT_MS
      }
  await fastify.register(fastifyPostgres, {
    connectionString: config.DATABASE_URL,
    ...sessionSettings,
    max: config.PG_POOL_MAX,
    connectionTimeoutMillis: config.PG_CONNECT_TIMEOUT_MS,
    query_timeout: clientQueryTimeoutMs(config),
    application_name: 'flash-sale'
  })
  // A pool client that loses its server emits 'error' on the pool; without a listener it crashes the process.
  fastify.pg.pool.on('error', (err) => fastify.log.warn({ err }, 'postgres connection lost'))

  const client = await connectDirect(config, 'flash-sale-migrate')
  try {
    await migrate(client, config.DATABASE_SCHEMA, (msg) => fastify.log.debug(msg))
  } finally {
    await client.end()
  }

  if (config.DATABASE_POOL_MODE === 'transaction') {
    const { rows: [session] } = await fastify.pg.query<{ schema: string | null, statement_ms: number, idle_ms: number }>(
      `SELECT current_schema() AS schema,
              extract(epoch FROM current_setting('statement_timeout')::interval) * 1000 AS statement_ms,
              extract(epoch FROM current_setting('idle_in_transaction_session_timeout')::interval) * 1000 AS idle_ms`)
    const ms = config.PG_QUERY_TIMEOUT_MS
    if (session?.schema !== config.DATABASE_SCHEMA || Number(session.statement_ms) !== ms || Number(session.idle_ms) !== ms) {
      throw new Error(`DATABASE_POOL_MODE=transaction: the pooler's connections have search_path ${session?.schema ?? 'unset'}, ` +
        `statement_timeout ${session?.statement_ms ?? '?'} ms and idle_in_transaction_session_timeout ${session?.idle_ms ?? '?'} ms; ` +
        `they need search_path = ${config.DATABASE_SCHEMA}, statement_timeout = ${ms} and idle_in_transaction_session_timeout = ${ms} ` +
        '(PgBouncer connect_query or ALTER ROLE ... SET)')
    }
  }
}, { name: 'postgres', dependencies: ['config'] })
