import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { test, type TestContext } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import type { Config } from '../src/config.js'
import { isolatedConfig } from './helpers.js'

/**
 * Real processes: the service runs as a child (the same entry as `npm start`, through tsx), and
 * the test kills it. Everything it acknowledged must be in Postgres afterwards.
 */
interface Service { child: ChildProcess, url: string, exited: Promise<number | null> }

async function startService (t: TestContext, config: Config): Promise<Service> {
  const port = 20000 + Math.floor(Math.random() * 20000)
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    env: {
      ...process.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'error',
      DATABASE_SCHEMA: config.DATABASE_SCHEMA,
      REDIS_KEY_PREFIX: config.REDIS_KEY_PREFIX,
      SALE_ITEMS: String(config.SALE_ITEMS),
      USER_LIMIT: String(config.USER_LIMIT),
      CHECKOUT_TTL_SECONDS: String(config.CHECKOUT_TTL_SECONDS),
      SHUTDOWN_GRACE_MS: '5000'
    },
    stdio: ['ignore', 'ignore', 'inherit']
  })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.after(() => { child.kill('SIGKILL') })
  const url = `http://127.0.0.1:${port}`
  for (let i = 0; i < 150; i++) {
    if (child.exitCode !== null) throw new Error(`service exited with ${child.exitCode}`)
    if (await fetch(`${url}/health`).then((r) => r.ok, () => false)) return { child, url, exited }
    await sleep(100)
  }
  throw new Error('service did not start')
}

interface Acks { codes: Set<string>, purchases: Map<string, number>, stop: boolean }

/** Users buying as fast as they can until told to stop or the service goes away. */
function load (url: string, acks: Acks, users: number, items: number): Promise<void[]> {
  return Promise.all(Array.from({ length: users }, async (_, u) => {
    while (!acks.stop) {
      try {
        const res = await fetch(`${url}/checkout?user_id=u${u}&id=${1 + Math.floor(Math.random() * items)}`, { method: 'POST' })
        const body = await res.json() as { code?: string }
        if (res.status !== 200 || !body.code) continue
        acks.codes.add(body.code)
        const bought = await fetch(`${url}/purchase?code=${body.code}`, { method: 'POST' })
        if (bought.status === 200) acks.purchases.set(body.code, ((await bought.json()) as { purchase_id: number }).purchase_id)
      } catch {
        return // the service is gone
      }
    }
  }))
}

async function query<T extends pg.QueryResultRow> (config: Config, text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: config.DATABASE_URL, options: `-c search_path=${config.DATABASE_SCHEMA}` })
  await client.connect()
  try {
    return (await client.query<T>(text, values)).rows
  } finally {
    await client.end()
  }
}

async function assertAcknowledgedAreCommitted (config: Config, acks: Acks): Promise<void> {
  const codes = await query<{ code: string }>(config, "SELECT code FROM checkout_attempts WHERE outcome = 'accepted'")
  const committed = new Set(codes.map((r) => r.code))
  for (const code of acks.codes) assert.ok(committed.has(code), `acknowledged checkout ${code} is in Postgres`)
  const purchases = await query<{ id: string, code: string }>(config, 'SELECT id, code FROM purchases')
  const byCode = new Map(purchases.map((r) => [r.code, Number(r.id)]))
  for (const [code, id] of acks.purchases) assert.equal(byCode.get(code), id, `acknowledged purchase ${id} is in Postgres`)
  const [dupes] = await query<{ n: number }>(config, 'SELECT count(*)::int - count(DISTINCT item_id)::int AS n FROM purchases')
  assert.equal(dupes?.n, 0, 'no item sold twice')
}

test('SIGKILL mid-load loses nothing acknowledged; after a restart nothing sells twice', async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: 300, USER_LIMIT: 10, CHECKOUT_TTL_SECONDS: 2 })
  const first = await startService(t, config)
  const acks: Acks = { codes: new Set(), purchases: new Map(), stop: false }
  const running = load(first.url, acks, 50, 300)
  await sleep(1500)
  first.child.kill('SIGKILL')
  await first.exited
  acks.stop = true
  await running
  assert.ok(acks.purchases.size > 10, `load made progress (${acks.purchases.size} purchases)`)
  await assertAcknowledgedAreCommitted(config, acks)

  // Restarted, the service sells what is left; reservations of the dead process expire (TTL 2 s).
  const second = await startService(t, config)
  await sleep(2100)
  const after: Acks = { codes: new Set(), purchases: new Map(), stop: false }
  const selling = load(second.url, after, 50, 300)
  for (let i = 0; i < 100; i++) {
    const { sale } = await (await fetch(second.url)).json() as { sale: { sold: number } }
    if (sale.sold === 300) break
    await sleep(100)
  }
  after.stop = true
  await selling
  await assertAcknowledgedAreCommitted(config, after)
  const [{ n } = { n: 0 }] = await query<{ n: number }>(config, 'SELECT count(*)::int AS n FROM purchases')
  assert.equal(n, 300, 'the sale still sells out exactly: no reservation stuck forever')
})

test('SIGTERM under load: stops accepting, flushes every acknowledged write, exits 0 in time', async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: 5000, USER_LIMIT: 10 })
  const service = await startService(t, config)
  const acks: Acks = { codes: new Set(), purchases: new Map(), stop: false }
  const running = load(service.url, acks, 50, 5000)
  await sleep(1000)
  const signalled = Date.now()
  service.child.kill('SIGTERM')
  assert.equal(await service.exited, 0)
  assert.ok(Date.now() - signalled < 6000, `exited in ${Date.now() - signalled} ms`)
  acks.stop = true
  await running
  assert.ok(acks.codes.size > 10)
  await assertAcknowledgedAreCommitted(config, acks)
})
