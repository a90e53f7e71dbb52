import pg from 'pg'
import type { Config } from '../config.js'

/**
 * A connection of its own straight to Postgres (DATABASE_DIRECT_URL, else DATABASE_URL) for what
 * a transaction-mode pooler cannot carry: migrations (node-pg-migrate's session advisory lock) and
 * partition DDL (DETACH ... CONCURRENTLY runs outside a transaction, lock_timeout is a session
 * setting). The caller ends it.
 */
export async function connectDirect (config: Config, applicationName: string): Promise<pg.Client> {
  const client = new pg.Client({
    connectionString: config.DATABASE_DIRECT_URL ?? config.DATABASE_URL,
    options: `-c search_path=${config.DATABASE_SCHEMA}`,
    connectionTimeoutMillis: config.PG_CONNECT_TIMEOUT_MS,
    application_name: applicationName
  })
  // A server that goes away mid-run fails the pending query; without a listener it would crash the process.
  client.on('error', () => {})
  await client.connect()
  return client
}
