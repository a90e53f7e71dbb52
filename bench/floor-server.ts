/**
 * The floor of this stack for `npm run bench`: the least a checkout can cost with Fastify, Redis
 * and Postgres, the same as the shared floor server the service is judged against. A route with
 * the checkout's query schema, one EVALSHA of a one-HINCRBY script (ioredis, auto-pipelined) and
 * one row per request in a 2 ms batched `INSERT … SELECT * FROM unnest(…)`; 200 with a code or
 * 409 item_reserved. No rules, no sale, no spool: whatever the service spends above this is its own.
 *
 * Env: PORT, HOST, DATABASE_URL, REDIS_URL, DATABASE_SCHEMA (created, and dropped at SIGTERM with
 * its table), REDIS_KEY_PREFIX (its one hash, deleted at SIGTERM), MODE bare | redis | pg | full
 * (default full: which of the two round trips the route makes).
 */
import { randomBytes } from 'node:crypto'
import Fastify, { LogController } from 'fastify'
import { Redis } from 'ioredis'
import pg from 'pg'

const MODE = process.env.MODE ?? 'full'
const withRedis = MODE === 'redis' || MODE === 'full'
const withPg = MODE === 'pg' || MODE === 'full'
const schemaName = process.env.DATABASE_SCHEMA ?? `floor_${process.pid}`
const table = `${schemaName}.floor_rows`
const key = `${process.env.REDIS_KEY_PREFIX ?? ''}floor:${process.pid}`

const app = Fastify({ logger: { level: 'warn' }, logController: new LogController({ disableRequestLogging: true }) })
const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { enableAutoPipelining: true })
const decide = "local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1) if n > 1 then return 'item_reserved' end return 'ok'"
redis.defineCommand('decide', { numberOfKeys: 1, lua: decide })
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres', max: 4 })
await pool.query(`CREATE SCHEMA IF NOT EXISTS ${schemaName}`)
await pool.query(`CREATE TABLE IF NOT EXISTS ${table} (id bigserial PRIMARY KEY, user_id text, item_id int, outcome text, code text, at timestamptz DEFAULT now())`)

interface Pending { user: string, item: number, outcome: string, code: string | null, resolve: () => void, reject: (err: Error) => void }
let queue: Pending[] = []
let timer: NodeJS.Timeout | null = null
/** Batches being written: a request whose client went away still writes its row, after app.close(). */
const writing = new Set<Promise<void>>()

function flush (): void {
  const done = write().finally(() => writing.delete(done))
  writing.add(done)
}

async function write (): Promise<void> {
  timer = null
  const batch = queue
  queue = []
  try {
    await pool.query(`INSERT INTO ${table} (user_id, item_id, outcome, code) SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[])`,
      [batch.map((r) => r.user), batch.map((r) => r.item), batch.map((r) => r.outcome), batch.map((r) => r.code)])
    for (const r of batch) r.resolve()
  } catch (err) {
    for (const r of batch) r.reject(err as Error)
  }
}

const record = (user: string, item: number, outcome: string, code: string | null) => new Promise<void>((resolve, reject) => {
  queue.push({ user, item, outcome, code, resolve, reject })
  timer ??= setTimeout(flush, 2)
})

const schema = {
  querystring: {
    type: 'object',
    properties: { user_id: { type: 'string', pattern: '^[A-Za-z0-9._:@-]{1,64}$' }, id: { type: 'string', pattern: '^[1-9][0-9]{0,9}$' } },
    required: ['user_id', 'id']
  },
  response: {
    200: {
      type: 'object',
      properties: {
        code: { type: 'string' },
        expires_at: { type: 'string' },
        sale_id: { type: 'integer' },
        item: { type: 'object', properties: { id: { type: 'integer' }, name: { type: 'string' }, description: { type: 'string' }, price: { type: 'number' } } }
      }
    },
    409: { type: 'object', properties: { error: { type: 'string' }, message: { type: 'string' } } }
  }
} as const

app.post<{ Querystring: { user_id: string, id: string } }>('/checkout', { schema }, async (req, reply) => {
  const { user_id: user, id } = req.query
  const code = randomBytes(16).toString('base64url')
  let outcome = 'ok'
  if (withRedis) outcome = await (redis as Redis & { decide: (key: string, field: string, user: string) => Promise<string> }).decide(key, id, user)
  if (withPg) await record(user, Number(id), outcome, outcome === 'ok' ? code : null)
  if (outcome !== 'ok') {
    reply.code(409)
    return { error: outcome, message: `Item ${id} is held by another checkout.` }
  }
  return { code, expires_at: new Date(Date.now() + 600_000).toISOString(), sale_id: 1, item: { id: Number(id), name: `Item #${id}`, description: 'Flash-sale item', price: 199.99 } }
})
app.get('/health', async () => ({ status: 'ok' }))
await app.listen({ host: process.env.HOST ?? '127.0.0.1', port: Number(process.env.PORT ?? 3998) })

/** No row waiting for its batch and no batch being written. */
const settled = () => timer === null && writing.size === 0

// Leaves nothing behind; exits normally so that --cpu-prof (BENCH_PROFILE=1) writes its profile.
async function close (): Promise<void> {
  await app.close()
  // After every decision sent before it (one connection answers in order): their rows are queued by now.
  await redis.del(key)
  while (!settled()) await Promise.all([...writing, new Promise((resolve) => setTimeout(resolve, 5))])
  try {
    await pool.query(`DROP SCHEMA IF EXISTS ${schemaName} CASCADE`)
  } finally {
    // Whatever happened, nothing may keep the process alive: the bench waits for it to exit.
    redis.disconnect()
    await pool.end()
  }
}
process.once('SIGTERM', () => {
  close().catch((err: unknown) => {
    console.error(err)
    process.exitCode = 1
  })
})
