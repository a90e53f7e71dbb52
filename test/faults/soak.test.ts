import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  assertAcknowledgedAreCommitted, assertNoUserOverLimit, freePort, kill, newAcks, pingRedis, query, startRedis, startService,
  terminatePostgresSessionsOf, waitFor, type Service
} from '../support/fault-kit.js'
import { isolatedConfig } from '../support/helpers.js'

/**
 * Soak: mixed load on a service child process while real faults fire on a schedule (Redis
 * SIGKILLed and restarted empty, the service's Postgres sessions terminated, the service itself
 * SIGKILLed and restarted), then the invariants are checked in Postgres. SOAK_SECONDS sets the
 * length of the faulty phase (default 12, clamped to 6..110 so the file always ends well inside
 * the test timeout and every fault fires at least once).
 */
const SOAK_SECONDS = Math.min(110, Math.max(6, Number(process.env.SOAK_SECONDS) || 12))
/** About what the load buys in the faulty phase (~35/s here), so the sale runs low near its end. */
const ITEMS = Math.min(4000, Math.max(400, 30 * SOAK_SECONDS))
const LIMIT = 5
const USERS = ITEMS / 2 // 2.5 slots per item: the limit bites for some users, the sale can sell out
const WORKERS = 30
/** Short bounds so failures surface fast; settle for orphaned purchases = 2 x (1 s connect + 2 s query + 1 s margin). */
const SERVICE_ENV = { PG_CONNECT_TIMEOUT_MS: '1000', PG_QUERY_TIMEOUT_MS: '2000', REDIS_COMMAND_TIMEOUT_MS: '1000', RELEASE_INTERVAL_MS: '250' }
/** Longer than any bounded answer of the service (the rebuild wait is the longest, 5 s). */
const REQUEST_TIMEOUT_MS = 10_000

type Body = Record<string, unknown>

interface Tally {
  statuses: Map<number, number>
  /** Answers outside the contract: 5xx other than 503, a 503 without Retry-After, a 4xx not in our shape, a hang. */
  unexpected: string[]
  connectionErrors: number
  /** Codes with two 200 purchases (must stay 0). */
  doubleBuys: string[]
  doubleRedemptions: number
}

const random = (n: number) => Math.floor(Math.random() * n)

test(`soak: ${SOAK_SECONDS} s of mixed load under Redis, Postgres and process faults keeps every invariant`, async (t) => {
  const redisPort = await freePort()
  let redis = startRedis(redisPort)
  t.after(() => kill(redis))
  await waitFor(`redis-server on port ${redisPort} to answer PING`, () => pingRedis(redisPort), 5000)

  const config = isolatedConfig(t, { REDIS_URL: `redis://127.0.0.1:${redisPort}`, SALE_ITEMS: ITEMS, USER_LIMIT: LIMIT, CHECKOUT_TTL_SECONDS: 2 })
  let service: Service = await startService(t, config, { env: SERVICE_ENV })
  const acks = newAcks()
  const tally: Tally = { statuses: new Map(), unexpected: [], connectionErrors: 0, doubleBuys: [], doubleRedemptions: 0 }

  /** One request; null when the connection failed (the child is dead or restarting): callers retry. */
  const call = async (method: 'GET' | 'POST', path: string): Promise<{ status: number, body: Body } | null> => {
    let res: Response
    let text: string
    try {
      res = await fetch(`${service.url}${path}`, { method, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
      text = await res.text()
    } catch (error) {
      if ((error as Error).name === 'TimeoutError') tally.unexpected.push(`${method} ${path}: no answer in ${REQUEST_TIMEOUT_MS} ms`)
      else tally.connectionErrors++
      await sleep(50)
      return null
    }
    tally.statuses.set(res.status, (tally.statuses.get(res.status) ?? 0) + 1)
    let body: Body = {}
    try { body = JSON.parse(text) as Body } catch { /* judged below */ }
    const errorShape = typeof body.error === 'string' && typeof body.message === 'string'
    const fine = res.status === 200 ||
      (res.status >= 400 && res.status < 500 && errorShape) ||
      (res.status === 503 && body.error === 'service_unavailable' && Number(res.headers.get('retry-after')) >= 1)
    if (!fine) tally.unexpected.push(`${method} ${path}: ${res.status} ${text.slice(0, 200)}`)
    return { status: res.status, body }
  }

  /** Redeems a code; records the acknowledgement. A 503 or a lost connection is retried twice. */
  const buy = async (code: string): Promise<number> => {
    for (let attempt = 0; attempt < 3; attempt++) {
      const res = await call('POST', `/purchase?code=${code}`)
      if (res?.status === 200) {
        if (acks.purchases.has(code)) tally.doubleBuys.push(code)
        acks.purchases.set(code, res.body.purchase_id as number)
      }
      if (res !== null && res.status !== 503) return res.status
    }
    return 0
  }

  /** Checks out for a user; returns the code when acknowledged, else the refusal. */
  const reserve = async (user: string, item: number): Promise<{ code?: string, error?: unknown }> => {
    const res = await call('POST', `/checkout?user_id=${user}&id=${item}`)
    if (res?.status !== 200) return { error: res?.body.error }
    const code = res.body.code as string
    acks.codes.add(code)
    return { code }
  }

  const invalid: [('GET' | 'POST'), () => string][] = [
    ['POST', () => '/checkout?user_id=bad%20user!&id=1'],
    ['POST', () => '/checkout?user_id=u1&id=0'],
    ['POST', () => `/checkout?user_id=u1&id=${ITEMS + 1 + random(100)}`],
    ['POST', () => '/purchase?code=short'],
    ['POST', () => `/purchase?code=${randomBytes(16).toString('base64url')}`],
    ['GET', () => '/no-such-route']
  ]

  // Mixed load: shoppers who buy, abandon (their hold expires after 2 s) or redeem one code twice at
  // once, plus invalid requests and GET /. Bounded by time and by iterations.
  const loadEnds = Date.now() + SOAK_SECONDS * 1000
  const shoppers = Promise.all(Array.from({ length: WORKERS }, async () => {
    for (let i = 0; i < 100_000 && Date.now() < loadEnds; i++) {
      const dice = random(100)
      if (dice < 8) {
        const [method, path] = invalid[random(invalid.length)] as [('GET' | 'POST'), () => string]
        await call(method, path())
      } else if (dice < 16) {
        await call('GET', '/')
      } else {
        const { code } = await reserve(`u${random(USERS)}`, 1 + random(ITEMS))
        const choice = random(100)
        if (code !== undefined && choice < 20) {
          tally.doubleRedemptions++
          await Promise.all([buy(code), buy(code)])
        } else if (code !== undefined && choice < 60) {
          await buy(code)
        }
      }
      await sleep(5 + random(10))
    }
  }))

  // Faults, one at a time with 700 ms of undisturbed load in between, until shortly before the
  // load ends (a service restart takes 1-3 s on two busy cores).
  const faults = { redisRestarts: 0, postgresTerminations: 0, sessionsTerminated: 0, serviceKills: 0 }
  const timeline: string[] = []
  const started = Date.now()
  const schedule = ['postgres', 'redis', 'service'] as const
  for (let n = 0; Date.now() < loadEnds - 2500; n++) {
    await sleep(700)
    const fault = schedule[n % schedule.length] as typeof schedule[number]
    timeline.push(`${fault}@${((Date.now() - started) / 1000).toFixed(1)}s`)
    if (fault === 'postgres') {
      faults.postgresTerminations++
      faults.sessionsTerminated += await terminatePostgresSessionsOf(config, service.child.pid as number)
    } else if (fault === 'redis') {
      faults.redisRestarts++
      await kill(redis)
      await sleep(1000) // down for a second: requests meanwhile get 503s
      redis = startRedis(redisPort) // empty: no persistence, the sale is rebuilt from Postgres
      await waitFor(`the restarted redis-server on port ${redisPort} to answer PING`, () => pingRedis(redisPort), 5000)
    } else {
      faults.serviceKills++
      await kill(service.child)
      service = await startService(t, config, { port: service.port, env: SERVICE_ENV })
    }
  }
  await shoppers
  const loaded = { checkouts: acks.codes.size, purchases: acks.purchases.size }

  // Faults stopped: the service recovers by itself (holds of dead codes expire, purchases the
  // killed process never recorded are undone after the settle time), and the sale sells out.
  await waitFor('the service\'s /health to answer 200 after the faults', async () => (await fetch(`${service.url}/health`)).ok, 10_000)
  const recorded = async () => (await query<{ n: number }>(config, 'SELECT count(*)::int AS n FROM purchases'))[0]?.n ?? 0
  const everyItem = Array.from({ length: ITEMS }, (_, i) => i + 1)
  let unsold = everyItem
  const recovery = new AbortController()
  const recoveryEnds = Date.now() + 40_000
  const closers = Promise.all(Array.from({ length: 10 }, async (_, w) => {
    for (let i = 0; i < 20_000 && !recovery.signal.aborted && Date.now() < recoveryEnds; i++) {
      const item = unsold[random(unsold.length)]
      const { code } = item === undefined ? {} : await reserve(`closer${w}-${i % 200}`, item)
      if (code !== undefined) await buy(code)
      else await sleep(20) // item_reserved: a hold of the faulty phase, it expires within 2 s
    }
  }))
  // The record says what is left, not the refusals: an item refused as sold may be a dead
  // process's unrecorded purchase, which the service gives back after the settle time.
  for (let i = 0; i < 200 && Date.now() < recoveryEnds; i++) {
    const sold = new Set((await query<{ item_id: number }>(config, 'SELECT item_id FROM purchases')).map((r) => r.item_id))
    if (sold.size === ITEMS) break
    unsold = everyItem.filter((item) => !sold.has(item))
    await sleep(100)
  }
  recovery.abort()
  await closers

  const { sale } = (await (await fetch(service.url)).json()) as { sale: { sold: number, held: number, left: number } }
  const count = (status: number) => tally.statuses.get(status) ?? 0
  t.diagnostic(`faults ${JSON.stringify(faults)} at ${timeline.join(' ')}; during the faults: ${loaded.checkouts} checkouts and ${loaded.purchases} purchases acknowledged, ` +
    `${tally.doubleRedemptions} double redemptions; statuses ${JSON.stringify(Object.fromEntries(tally.statuses))}; ` +
    `${tally.connectionErrors} connection errors; final sale ${JSON.stringify(sale)}`)

  // Every answer kept the contract; the faults really fired and were felt.
  assert.deepEqual(tally.unexpected.slice(0, 10), [], 'only 200, 4xx in our error shape and 503 with Retry-After')
  assert.equal(count(500), 0)
  assert.ok(faults.redisRestarts >= 1 && faults.postgresTerminations >= 1 && faults.serviceKills >= 1, JSON.stringify(faults))
  assert.ok(faults.sessionsTerminated >= 1, 'the service had Postgres sessions to lose')
  assert.ok(tally.connectionErrors > 0, 'the killed service was felt')
  assert.ok(loaded.purchases >= 50, `load made progress during the faults (${loaded.purchases} purchases)`)

  // Postgres holds everything acknowledged, and nothing it holds breaks a rule.
  assert.deepEqual(tally.doubleBuys, [], 'no code acknowledged as bought twice')
  assert.equal(new Set(acks.purchases.values()).size, acks.purchases.size, 'purchase ids are distinct')
  await assertAcknowledgedAreCommitted(config, acks)
  await assertNoUserOverLimit(config, LIMIT)
  const [codes] = await query<{ n: number }>(config, 'SELECT count(*)::int - count(DISTINCT code)::int AS n FROM purchases')
  assert.equal(codes?.n, 0, 'no code purchased twice')
  const [stray] = await query<{ n: number }>(config,
    `SELECT count(*)::int AS n FROM purchases p LEFT JOIN checkout_attempts a
       ON a.code = p.code AND a.outcome = 'accepted' AND a.item_id = p.item_id AND a.user_id = p.user_id
     WHERE a.id IS NULL`)
  assert.equal(stray?.n, 0, 'every purchase redeems an accepted checkout of its own item and user')
  const [unfenced] = await query<{ n: number }>(config,
    `SELECT count(*)::int AS n FROM checkout_attempts a LEFT JOIN purchases p ON p.code = a.code
     WHERE (p.id IS NOT NULL) <> (a.settled IS NOT DISTINCT FROM 'purchased')`)
  assert.equal(unfenced?.n, 0, "a code is settled 'purchased' exactly when it has its purchase")

  // After the faults the sale still sells out exactly, and Redis agrees with the record.
  assert.equal(await recorded(), ITEMS, 'every item eventually sold, once')
  assert.deepEqual(sale, { ...sale, sold: ITEMS, held: 0, left: 0 }, 'Redis counts what Postgres holds')
})
