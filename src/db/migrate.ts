import { fileURLToPath } from 'node:url'
import { runner } from 'node-pg-migrate'
import type { ClientBase } from 'pg'

export const migrationsDir = fileURLToPath(new URL('../../migrations/', import.meta.url))

/**
 * Applies pending SQL migrations (migrations/*.sql) with node-pg-migrate. Its advisory lock
 * is waited on, so instances starting together apply each migration exactly once.
 */
export async function migrate (client: ClientBase, schema: string, log: (msg: string) => void): Promise<void> {
  await runner({
    dbClient: client,
    dir: migrationsDir,
    direction: 'up',
    migrationsTable: 'pgmigrations',
    schema,
    createSchema: true,
    checkOrder: true,
    advisoryLockMode: 'wait',
    log
  })
}
