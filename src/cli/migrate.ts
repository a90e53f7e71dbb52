/** `npm run migrate`: applies pending migrations (the service also does this at start-up). */
import { migrate } from '../db/migrate.js'
import { withDatabase } from './database.js'

await withDatabase(async (pool, schema) => {
  const client = await pool.connect()
  try {
    await migrate(client, schema, (msg) => console.log(msg))
  } finally {
    client.release()
  }
})
