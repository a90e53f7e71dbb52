import pg from 'pg'
import { configOrExit } from '../config.js'
import { printableUrl } from '../startup.js'

/**
 * Runs an operator command against the configured Postgres (DATABASE_DIRECT_URL when set, the
 * server itself rather than a pooler, else DATABASE_URL; DATABASE_SCHEMA), then closes the pool. A failure is one line and exit 1.
 */
export async function withDatabase (command: (pool: pg.Pool, schema: string) => Promise<void>): Promise<void> {
  const config = configOrExit()
  const variable = config.DATABASE_DIRECT_URL === undefined ? 'DATABASE_URL' : 'DATABASE_DIRECT_URL'
  const url = config.DATABASE_DIRECT_URL ?? config.DATABASE_URL
  const pool = new pg.Pool({
    connectionString: url,
    options: `-c search_path=${config.DATABASE_SCHEMA}`,
    max: 2,
    connectionTimeoutMillis: config.PG_CONNECT_TIMEOUT_MS,
    application_name: 'flash-sale-cli'
  })
  try {
    await command(pool, config.DATABASE_SCHEMA)
  } catch (error) {
    // A connection that fails names the variable to fix (as the service's start-up does); a query error is its own story.
    const connection = error instanceof Error && !(error instanceof pg.DatabaseError) && /connect|ECONN|ENOTFOUND|EAI_AGAIN|timeout/i.test(`${error.message} ${(error as NodeJS.ErrnoException).code ?? ''}`)
    console.error(connection ? `${variable} (${printableUrl(url)}) is not usable: ${(error as Error).message}` : (error as Error).message)
    process.exitCode = 1
  } finally {
    await pool.end()
  }
}
