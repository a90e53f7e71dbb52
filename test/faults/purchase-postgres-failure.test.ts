import assert from 'node:assert/strict'
import { test, type TestContext } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import { localPortsTo } from '../../bench/sockets.js'
import type { Config } from '../../src/config.js'
import { canSwitchUser, dedicatedPostgres, query, terminatePostgresSessionsOf, waitFor } from '../support/fault-kit.js'
import { buildTestApp, checkout, isolatedConfig, purchase, schemaClient, TestClock } from '../support/helpers.js'

/**
 * A purchase answered 503 because Postgres failed under it at the connection level (its session
 * terminated, the server stopping) changes nothing the customer can see: retried within seconds of
 * recovery it buys, or answers `code_used` naming the purchase Postgres holds. Never a bare
 * `code_used`, never `code_expired` for a code whose own expiry is far off.
 *
 * The purchases are held inside Postgres (a lock on the purchases table) when the failure strikes,
 * so each one's statement is surely in flight: its outcome is unknown to the service.
 */

const T0 = '2031-03-04T13:10:00.000Z'
const CODES = 8
/** How long after recovery a retried purchase may take to settle (the promise says "seconds"). */
const RETRY_WINDOW_MS = 10_000

interface Answer { status: number, body: { error?: string, purchase_id?: number } }
const answerOf = async (app: FastifyInstance, code: string): Promise<Answer> => {
  const res = await purchase(app, code)
  return { status: res.statusCode, body: res.json() }
}

async function reserveCodes (app: FastifyInstance, count: number, firstItem = 1): Promise<string[]> {
  const codes: string[] = []
  for (let item = firstItem; item < firstItem + count; item++) {
    const res = await checkout(app, `user_id=u${item}&id=${item}`)
    assert.equal(res.statusCode, 200, res.body)
    codes.push(res.json().code)
  }
  return codes
}

/**
 * Locks the purchases table from a connection of the test's own, sends a purchase of each code and
 * resolves once all of them are queued in Postgres behind the lock (none in the service's writer).
 */
async function purchasesHeldInPostgres (t: TestContext, app: FastifyInstance, config: Config, codes: string[]) {
  const blocker = await schemaClient(t, config)
  blocker.on('error', () => {}) // a stop of the server ends this session too
  await blocker.query('BEGIN')
  await blocker.query('LOCK TABLE purchases IN EXCLUSIVE MODE')
  const answers = codes.map((code) => answerOf(app, code))
  const pgPort = Number(new URL(config.DATABASE_URL).port || 5432)
  const waiting = async () => {
    const ports = localPortsTo(process.pid, pgPort)
    const [row] = await query<{ n: number }>(config,
      `SELECT count(*)::int AS n FROM pg_stat_activity
       WHERE application_name = 'flash-sale' AND client_port = ANY($1::int[]) AND wait_event_type = 'Lock' AND query LIKE 'WITH batch AS%'`, [ports])
    return (row?.n ?? 0) > 0 && app.purchaseWriter.queued === 0
  }
  await waitFor('a purchase statement waiting on the lock, none queued', waiting, 10_000).catch(() => assert.fail('the purchases did not reach Postgres (no purchase statement waiting on the lock) within 10 s'))
  await sleep(200) // batches of the last redemptions, if any, join the ones waiting
  return { answers: Promise.all(answers), blocker }
}

/** Retries a purchase answered 503 until it settles: 200, or `code_used` naming its purchase. */
async function retried (app: FastifyInstance, code: string): Promise<number> {
  const deadline = Date.now() + RETRY_WINDOW_MS
  let last: Answer | undefined
  while (Date.now() < deadline) {
    last = await answerOf(app, code)
    if (last.status === 200 && typeof last.body.purchase_id === 'number') return last.body.purchase_id
    if (last.status === 409 && last.body.error === 'code_used' && typeof last.body.purchase_id === 'number') return last.body.purchase_id
    assert.equal(last.status, 503, `retry of ${code}: ${last.status} ${JSON.stringify(last.body)} (503 promised the code untouched)`)
    await sleep(200)
  }
  return assert.fail(`retry of ${code}: still ${last?.status} ${JSON.stringify(last?.body)} ${RETRY_WINDOW_MS / 1000} s after recovery`)
}

/** Every code bought exactly once, with the purchase id its buyer was given; no item twice. */
async function assertEachCodeBoughtOnce (config: Config, given: Map<string, number>): Promise<void> {
  const rows = await query<{ id: string, code: string }>(config, 'SELECT id, code FROM purchases')
  const byCode = new Map(rows.map((r) => [r.code, Number(r.id)]))
  assert.equal(rows.length, byCode.size, 'no code bought twice')
  for (const [code, id] of given) assert.equal(byCode.get(code), id, `the purchase of ${code} the buyer was given is the one in Postgres`)
  assert.equal(rows.length, given.size, 'nothing bought that no buyer was told of')
  const [dupes] = await query<{ n: number }>(config, 'SELECT count(*)::int - count(DISTINCT item_id)::int AS n FROM purchases')
  assert.equal(dupes?.n, 0, 'no item sold twice')
}

/** Settles every answer: 200s stand, 503s are retried. Returns code -> purchase id, and how many were 503. */
async function settle (app: FastifyInstance, codes: string[], answers: Answer[]): Promise<{ given: Map<string, number>, unavailable: number }> {
  const given = new Map<string, number>()
  let unavailable = 0
  for (const [i, code] of codes.entries()) {
    const answer = answers[i] as Answer
    if (answer.status === 200) {
      given.set(code, answer.body.purchase_id as number)
      continue
    }
    assert.equal(answer.status, 503, `first answer for ${code}: ${answer.status} ${JSON.stringify(answer.body)}`)
    unavailable++
    given.set(code, await retried(app, code))
  }
  return { given, unavailable }
}

test('sessions terminated mid-purchase (pg_terminate_backend, 57P01): each purchase answered 503 buys on retry', async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: 20, USER_LIMIT: 20, CHECKOUT_TTL_SECONDS: 600, BATCH_MAX_INFLIGHT: 20 })
  const app = await buildTestApp(t, config, new TestClock(Date.parse(T0)))
  const codes = await reserveCodes(app, CODES)

  const { answers, blocker } = await purchasesHeldInPostgres(t, app, config, codes)
  assert.ok(await terminatePostgresSessionsOf(config, process.pid) > 0, 'the service had sessions to terminate')
  const first = await answers
  await blocker.query('COMMIT')

  const { given, unavailable } = await settle(app, codes, first)
  assert.ok(unavailable > 0, 'the termination was answered 503')
  t.diagnostic(`${unavailable} of ${CODES} purchases answered 503; all bought on retry`)
  await assertEachCodeBoughtOnce(config, given)
  const { sold, held } = (await app.inject('/')).json().sale
  assert.deepEqual({ sold, held }, { sold: CODES, held: 0 }, 'Redis counts what Postgres holds')
})

test('Postgres fast stop mid-purchase (pg_ctl stop -m fast), then a restart: each purchase answered 503 buys on retry', { skip: !canSwitchUser && 'needs root to run a dedicated Postgres' }, async (t) => {
  const postgres = dedicatedPostgres(t)
  const config = isolatedConfig(t, {
    DATABASE_URL: postgres.url, SALE_ITEMS: 20, USER_LIMIT: 20, CHECKOUT_TTL_SECONDS: 600, BATCH_MAX_INFLIGHT: 20, PG_CONNECT_TIMEOUT_MS: 1000
  })
  const app = await buildTestApp(t, config, new TestClock(Date.parse(T0)))
  const codes = await reserveCodes(app, CODES)
  const [duringOutage] = await reserveCodes(app, 1, CODES + 1)

  const { answers } = await purchasesHeldInPostgres(t, app, config, codes)
  postgres.stopFast()
  const first = await answers
  // Sent while Postgres is down: refused before any statement went out.
  const refused = await answerOf(app, duringOutage as string)
  assert.equal(refused.status, 503, JSON.stringify(refused.body))

  postgres.start()
  await waitFor('/health to answer 200 after Postgres restarted', async () => (await app.inject('/health')).statusCode === 200, 10_000)
    .catch(() => assert.fail('/health did not answer 200 within 10 s of the restart'))
  const { given, unavailable } = await settle(app, [...codes, duringOutage as string], [...first, refused])
  assert.ok(unavailable > 1, 'the stop was answered 503')
  t.diagnostic(`${unavailable} of ${CODES + 1} purchases answered 503; all bought on retry`)
  await assertEachCodeBoughtOnce(config, given)
  const { sold, held } = (await app.inject('/')).json().sale
  assert.deepEqual({ sold, held }, { sold: CODES + 1, held: 0 }, 'Redis counts what Postgres holds')
})

test('Postgres frozen past the client\'s query timeout with purchases on the wire: those that commit behind their 503 are named on retry, the others buy', { skip: !canSwitchUser && 'needs root to run a dedicated Postgres' }, async (t) => {
  const postgres = dedicatedPostgres(t)
  const config = isolatedConfig(t, {
    DATABASE_URL: postgres.url, SALE_ITEMS: 20, USER_LIMIT: 20, CHECKOUT_TTL_SECONDS: 600, BATCH_MAX_INFLIGHT: 20, PG_CONNECT_TIMEOUT_MS: 500, PG_QUERY_TIMEOUT_MS: 500
  })
  const clock = new TestClock(Date.parse(T0))
  const app = await buildTestApp(t, config, clock)
  const codes = await reserveCodes(app, CODES)

  // The pool holds idle connections from the checkouts: the purchases are written on them into the
  // frozen server's socket buffers, and run (and commit) when it thaws, long after the client gave up.
  postgres.stall()
  const first = await Promise.all(codes.map((code) => answerOf(app, code)))
  await sleep(500)
  postgres.resume()
  // Retries carry a later purchase time than the statements that were on the wire.
  clock.advance(1000)
  await waitFor('/health to answer 200 after Postgres was thawed', async () => (await app.inject('/health')).statusCode === 200, 10_000)
    .catch(() => assert.fail('/health did not answer 200 within 10 s of the thaw'))
  const { given, unavailable } = await settle(app, codes, first)
  assert.ok(unavailable > 0, 'the freeze was answered 503')
  await assertEachCodeBoughtOnce(config, given)
  const [behind] = await query<{ n: number }>(config, 'SELECT count(*)::int AS n FROM purchases WHERE purchased_at = $1', [T0])
  t.diagnostic(`${unavailable} of ${CODES} purchases answered 503; ${behind?.n ?? 0} of them committed behind the 503 and were named on retry, the rest bought`)
  assert.ok((behind?.n ?? 0) > 0, 'some purchase statement was on the wire and committed after its 503 (else the freeze missed them all)')
  const { sold, held } = (await app.inject('/')).json().sale
  assert.deepEqual({ sold, held }, { sold: CODES, held: 0 }, 'Redis counts what Postgres holds')
})
