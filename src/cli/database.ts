import pg from 'pg'
import { configOrExit } from '../config.js'

/**
 * Runs an operator command against the configured Postgres (DATABASE_DIRECT_URL when set, the
 * server itself rather than a pooler, else DATABASE_URL; DATABASE_SCHEMA), then closes the pool. A failure is one line and exit 1.
 */
export async function withDatabase (command: (pool: pg.Pool, schema: string) => Promise<void>): Promise<void> {
  const config = configOrExit()
  const pool = new pg.Pool({
    connectionString: config.DATABASE_DIRECT_URL ?? config.DATABASE_URL,
    options: `-c search_path=${config.DATABASE_SCHEMA}`,
    max: 2,
    connectionTimeoutMillis: config.PG_CONNECT_TIMEOUT_MS,
    application_name: 'flash-sale-cli'
  })
  try {
    await command(pool, config.DATABASE_SCHEMA)
  } catch (error) {
    console.error(`${(error as Error).message}`)
    process.exitCode = 1
  } finally {
    await pool.end()
  }
}
