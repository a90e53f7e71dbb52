/**
 * `npm run bench`: autocannon against the real service (its own process, local Postgres and
 * Redis), next to a bare Fastify route as the machine's ceiling. Prints a table with the CPU
 * time per request of every process involved, writes bench/results/<time>.json, then checks the
 * invariants in Postgres, sale by sale, and exits 1 if one broke.
 *
 *   npm run bench                 full run (10 s per scenario, 10,000-item sell-out)
 *   npm run bench -- --smoke      a few seconds, small sale, no thresholds (CI)
 *   npm run bench -- --cluster    service in cluster mode (one worker per core)
 *   npm run bench -- --only=sellout   only the named scenarios (bare, stampede, latency, sellout; comma-separated)
 *   npm run bench -- --dist=../other/dist   the service built elsewhere (e.g. the code before a change, for back-to-back runs)
 *   npm run bench -- --node-flags=--max-semi-space-size=4   Node flags for the service after those of `npm start` (comma-separated)
 *   BENCH_PROFILE=1 npm run bench  also write a V8 CPU profile per process to bench/results/
 *   npm run bench -- --history=20000000 [--history-days=30] [--history-rounds=3]   also the stampede on an
 *                                 empty schema and on one prefilled with that many attempts, alternating (bench/history.ts)
 *
 * A scenario that crosses XX:00 meets two sales: the bench counts each sale on its own (the
 * crowd of the sell-out starts over on the new sale) and says so in its output.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, totalmem } from 'node:os'
import autocannon from 'autocannon'
import pg from 'pg'
import { loadConfig } from '../src/config.js'
import { CpuMeter, postmasterPid, redisPid, type ProcessCpu } from './cpu.js'
import { compareWithHistory, type HistoryComparison, type StampedeHooks } from './history.js'
import { paced, type PacedResult } from './paced.js'
import { npmStartFlags, rssMb, stop, untilHealthy } from './processes.js'

const smoke = process.argv.includes('--smoke')
const clusterMode = process.argv.includes('--cluster')
const dist = process.argv.find((arg) => arg.startsWith('--dist='))?.slice('--dist='.length) ?? 'dist'
const nodeFlags = process.argv.find((arg) => arg.startsWith('--node-flags='))?.slice('--node-flags='.length).split(',') ?? []
/** `npm start`'s Node flags: the bench runs the service as it runs for real; `--node-flags` come after them and win (V8 takes a flag's last value). */
const startFlags = npmStartFlags()
const only = process.argv.find((arg) => arg.startsWith('--only='))?.slice('--only='.length).split(',')
type Scenario = 'bare' | 'stampede' | 'latency' | 'sellout'
const historyRows = Number(process.argv.find((arg) => arg.startsWith('--history='))?.slice('--history='.length) ?? 0)
const historyDays = Number(process.argv.find((arg) => arg.startsWith('--history-days='))?.slice('--history-days='.length) ?? 30)
const historyRounds = Number(process.argv.find((arg) => arg.startsWith('--history-rounds='))?.slice('--history-rounds='.length) ?? 3)
const runs = (scenario: Scenario) => only === undefined || only.includes(scenario)
const DURATION_S = smoke ? 2 : 10
const LATENCY_DURATION_S = smoke ? 1 : 5
const CONNECTIONS = 200
/** Keep-alive connections of the fixed-rate scenario at most: its rate at a few ms each needs far fewer (Little's law). */
const LATENCY_CONNECTIONS = 50
const STAMPEDE_ITEMS = 10_000
const SELLOUT_ITEMS = smoke ? 500 : 10_000
const SELLOUT_CONNECTIONS = smoke ? 100 : 1000
/** Offered rate of the latency scenario when the stampede did not run to measure the maximum. */
const DEFAULT_FIXED_RATE = 1000
const USER_LIMIT = 10
/** Checkout TTL of the sell-out's service: abandoned holds come back within the run. */
const SELLOUT_TTL_S = 5
const runId = `bench_${Date.now().toString(36)}_${randomBytes(2).toString('hex')}`
const base = loadConfig()
const pids = { redis: await redisPid(base.REDIS_URL).catch(() => 0), postgres: await postmasterPid(base.DATABASE_URL).catch(() => 0) }

interface Service { url: string, child: ChildProcess, schema: string }

let nextPort = 3400 + Math.floor(Math.random() * 500)

/** Starts a process that answers GET /health, and waits for it. */
async function startProcess (args: string[], env: Record<string, string>): Promise<{ url: string, child: ChildProcess }> {
  const port = nextPort++
  const profile = process.env.BENCH_PROFILE ? ['--cpu-prof', '--cpu-prof-dir=bench/results'] : []
  const child = spawn(process.execPath, [...profile, ...args], {
    env: { ...process.env, ...env, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'inherit', 'inherit']
  })
  const url = `http://127.0.0.1:${port}`
  await untilHealthy(child, url, args.join(' '), 200)
  return { url, child }
}

async function startService (name: string, items: number, env: Record<string, string> = {}): Promise<Service> {
  const schema = `${runId}_${name}`
  const { url, child } = await startProcess([...startFlags, ...nodeFlags, `${dist}/src/${clusterMode ? 'cluster' : 'server'}.js`], {
    DATABASE_SCHEMA: schema,
    REDIS_KEY_PREFIX: `${schema}:`,
    SALE_ITEMS: String(items),
    USER_LIMIT: String(USER_LIMIT),
    ...env
  })
  return { url, child, schema }
}

const meterFor = (child: ChildProcess) => new CpuMeter({ service: child.pid as number, ...pids })

interface Row {
  scenario: string
  requests: number
  reqPerSec: number
  p50: number
  p97_5: number
  p99: number
  errors: number
  timeouts: number
  non2xx: number
  refusals: Record<string, number>
  /** CPU µs per request of each process during the scenario. */
  cpuUsPerRequest: ProcessCpu
  idleRssMb: number | null
  peakRssMb: number | null
  seconds: number
  extra?: Record<string, number | string>
}

function row (scenario: string, result: autocannon.Result, refusals: Record<string, number>, cpu: ProcessCpu,
  rss: { idle: number | null, peak: number | null }, extra?: Row['extra']): Row {
  return {
    scenario,
    requests: result.requests.total,
    reqPerSec: Math.round(result.requests.average),
    p50: result.latency.p50,
    p97_5: result.latency.p97_5,
    p99: result.latency.p99,
    errors: result.errors,
    timeouts: result.timeouts,
    non2xx: result.non2xx,
    refusals,
    cpuUsPerRequest: cpu,
    idleRssMb: rss.idle,
    peakRssMb: rss.peak,
    seconds: result.duration,
    ...(extra ? { extra } : {})
  }
}

const countRefusal = (refusals: Record<string, number>, status: number, body: string) => {
  if (status < 300) return
  let code = String(status)
  try { code = `${status} ${(JSON.parse(body) as { error: string }).error}` } catch { /* not JSON */ }
  refusals[code] = (refusals[code] ?? 0) + 1
}

/** The sale a successful checkout or purchase answer belongs to. */
const saleOf = (body: string): number => Number(/"sale_id":(\d+)/.exec(body)?.[1])

/** The host's count of connections dropped because a listen queue was full (TcpExt ListenOverflows). */
function listenOverflows (): number {
  const [names, values] = readFileSync('/proc/net/netstat', 'utf8').split('\n').filter((line) => line.startsWith('TcpExt:'))
  const i = names?.split(' ').indexOf('ListenOverflows') ?? -1
  return i < 0 ? NaN : Number(values?.split(' ')[i])
}

const bump = (counts: Map<number, number>, key: number) => counts.set(key, (counts.get(key) ?? 0) + 1)

const run = (opts: autocannon.Options) => {
  let instance!: autocannon.Instance
  const done = new Promise<autocannon.Result>((resolve, reject) => {
    instance = autocannon(opts, (err, result) => err ? reject(err) : resolve(result))
  })
  autocannon.track(instance, { renderResultsTable: false, renderLatencyTable: false })
  return { instance, done }
}

/** Runs autocannon and measures each process's CPU per request meanwhile. */
async function measured (child: ChildProcess, opts: autocannon.Options): Promise<{ result: autocannon.Result, cpu: ProcessCpu }> {
  const meter = meterFor(child)
  meter.start()
  const result = await run(opts).done
  return { result, cpu: meter.perRequest(result.requests.total) }
}

/** What the bench expects of one service's records in Postgres, sale by sale. */
interface Expectation {
  service: Service
  /** Checkout requests sent, and connections (each may have one unread when the run stopped). */
  checkoutsSent: number
  connections: number
  /** Checkouts answered 200, by sale: each has its accepted attempt row. */
  acceptedBySale: Map<number, number>
  /** Purchases answered 200, by sale: each has its purchase row. */
  soldBySale: Map<number, number>
  /** The scenario runs until one sale is sold out; which one it was. */
  sellsOut: boolean
  soldOutSale?: number
  /** No code may be held twice at once: the run is shorter than the checkout TTL. */
  holdsOutliveRun: boolean
}

/** Only the sell-out runs with a checkout TTL shorter than itself (and runs until it sells out). */
const expectation = (service: Service, connections: number, sellsOut: boolean): Expectation =>
  ({ service, checkoutsSent: 0, connections, acceptedBySale: new Map(), soldBySale: new Map(), sellsOut, holdsOutliveRun: !sellsOut })

/** What one autocannon connection remembers between its checkout and its purchase. */
interface Flow { item?: number, code?: string, epoch?: number }

/** Scenario 1: the machine's ceiling, a bare Fastify POST route answering a small JSON body (compiled, like the service). */
async function bare (): Promise<Row> {
  const { url, child } = await startProcess(['dist/bench/bare-server.js'], {})
  try {
    const idle = rssMb(child.pid as number, 'VmRSS')
    console.log(`\n▶ bare Fastify route, ${CONNECTIONS} connections, ${DURATION_S} s`)
    const { result, cpu } = await measured(child, { url: `${url}/checkout?user_id=u1&id=1`, method: 'POST', connections: CONNECTIONS, duration: DURATION_S })
    return row('bare fastify route', result, {}, cpu, { idle, peak: rssMb(child.pid as number) })
  } finally {
    await stop(child)
  }
}

/** Scenario 2: the stampede: random users checking out random items of a fresh sale. */
async function stampede (name = 'stampede', hooks: StampedeHooks = {}): Promise<{ row: Row, expect: Expectation }> {
  await hooks.prepare?.(`${runId}_${name}`)
  const service = await startService(name, STAMPEDE_ITEMS)
  const refusals: Record<string, number> = {}
  const expect = expectation(service, CONNECTIONS, false)
  try {
    const idle = rssMb(service.child.pid as number, 'VmRSS')
    console.log(`\n▶ ${name}: POST /checkout, random users and items, ${CONNECTIONS} connections, ${DURATION_S} s`)
    const measuring = await hooks.measure?.(service)
    const { result, cpu } = await measured(service.child, {
      url: service.url,
      connections: CONNECTIONS,
      duration: DURATION_S,
      requests: [{
        method: 'POST',
        setupRequest: (req) => {
          expect.checkoutsSent++
          return { ...req, path: `/checkout?user_id=u${Math.floor(Math.random() * 1_000_000)}&id=${1 + Math.floor(Math.random() * STAMPEDE_ITEMS)}` }
        },
        onResponse: (status, body) => {
          if (status === 200) bump(expect.acceptedBySale, saleOf(body))
          else countRefusal(refusals, status, body)
        }
      }]
    })
    const extra = await measuring?.()
    return { row: row(name === 'stampede' ? 'stampede checkout' : `${name} checkout`, result, refusals, cpu, { idle, peak: rssMb(service.child.pid as number) }, extra), expect }
  } finally {
    await stop(service.child)
  }
}

/**
 * Scenario 3: latency where it means something: checkouts, then purchases of the codes they got,
 * each at a fixed offered rate of half the stampede's maximum, sent open-loop (bench/paced.ts),
 * so the percentiles are service time rather than queueing.
 */
async function latency (rate: number): Promise<{ rows: Row[], expect: Expectation }> {
  const service = await startService('latency', STAMPEDE_ITEMS)
  const expect = expectation(service, LATENCY_CONNECTIONS, false)
  const codes: string[] = []
  const refusals: Record<string, number> = {}
  const purchaseRefusals: Record<string, number> = {}
  const pacedRow = (scenario: string, result: PacedResult, refused: Record<string, number>, cpu: ProcessCpu): Row => ({
    scenario,
    requests: result.answered,
    reqPerSec: Math.round(result.answered / result.seconds),
    p50: result.p50,
    p97_5: result.p97_5,
    p99: result.p99,
    errors: result.errors,
    timeouts: 0,
    non2xx: Object.values(refused).reduce((a, b) => a + b, 0),
    refusals: refused,
    cpuUsPerRequest: cpu,
    idleRssMb: null,
    peakRssMb: rssMb(service.child.pid as number),
    seconds: result.seconds
  })
  try {
    console.log(`\n▶ latency: POST /checkout at ${rate}/s for ${LATENCY_DURATION_S} s, then POST /purchase of its codes at ${rate}/s (open loop)`)
    const checkoutMeter = meterFor(service.child)
    checkoutMeter.start()
    const checkouts = await paced({
      url: service.url,
      rate,
      count: rate * LATENCY_DURATION_S,
      connections: LATENCY_CONNECTIONS,
      // Items in turn, then random ones (refused: every item is held), as a crowd would.
      path: (i) => `/checkout?user_id=u${Math.floor(Math.random() * 1_000_000)}&id=${i < STAMPEDE_ITEMS ? i + 1 : 1 + Math.floor(Math.random() * STAMPEDE_ITEMS)}`,
      onResponse: (status, body) => {
        if (status !== 200) return countRefusal(refusals, status, body)
        bump(expect.acceptedBySale, saleOf(body))
        codes.push((JSON.parse(body) as { code: string }).code)
      }
    })
    expect.checkoutsSent = checkouts.sent
    const checkoutRow = pacedRow(`checkout at ${rate}/s (fixed)`, checkouts, refusals, checkoutMeter.perRequest(checkouts.answered))
    if (codes.length === 0) throw new Error('latency: no checkout was accepted, nothing to purchase')
    const purchaseMeter = meterFor(service.child)
    purchaseMeter.start()
    const purchases = await paced({
      url: service.url,
      rate,
      count: codes.length,
      connections: LATENCY_CONNECTIONS,
      path: (i) => `/purchase?code=${codes[i]}`,
      onResponse: (status, body) => {
        if (status === 200) bump(expect.soldBySale, saleOf(body))
        else countRefusal(purchaseRefusals, status, body)
      }
    })
    const purchaseRow = pacedRow(`purchase at ${rate}/s (fixed)`, purchases, purchaseRefusals, purchaseMeter.perRequest(purchases.answered))
    return { rows: [checkoutRow, purchaseRow], expect }
  } finally {
    await stop(service.child)
  }
}

/**
 * Scenario 4: the sell-out: checkout then purchase until every item is sold. The crowd shares
 * what it has learned, as buyers refreshing a listing would: it tries each item once in a random
 * order, never again once seen sold; an item refused for another reason goes back in the queue.
 * With nothing left to try (every unsold item is held by one of its own connections, about to
 * buy it) a connection asks GET /health instead of an item it knows is taken. The service's own
 * answers decide everything. If a new sale appears (XX:00 passed), the crowd starts over on it.
 */
async function sellout (): Promise<{ row: Row, expect: Expectation }> {
  // A connection that fails between its checkout and its purchase (autocannon then starts the
  // flow over, the code lost) abandons its reservation, as a real buyer may: with the default
  // 10-minute TTL the item would stay held past the bench's window. Abandoned holds here expire
  // after a few seconds, so the sale sells out exactly whatever the client's luck.
  const service = await startService('sellout', SELLOUT_ITEMS, { CHECKOUT_TTL_SECONDS: String(SELLOUT_TTL_S) })
  const refusals: Record<string, number> = {}
  const expect = expectation(service, SELLOUT_CONNECTIONS, true)
  const shuffled = () => Array.from({ length: SELLOUT_ITEMS }, (_, i) => i + 1).sort(() => Math.random() - 0.5)
  /** Knowledge of the crowd about the current sale; `epoch` counts sales seen. */
  let epoch = 0
  let saleId = NaN
  let queue = shuffled()
  let cursor = 0
  let sold = new Set<number>()
  /** Items one of the crowd's connections holds -> since when (an abandoned hold expires after the TTL). */
  let held = new Map<number, number>()
  let soldOutAt = 0
  const started = Date.now()
  const newSale = (id: number) => {
    epoch++
    saleId = id
    queue = shuffled()
    cursor = 0
    sold = new Set()
    held = new Map()
  }
  /** An item nobody of the crowd is known to hold or to have bought; a hold older than the TTL counts as abandoned (its connection failed). */
  const anyFree = (): number | undefined => {
    const now = Date.now()
    for (let tries = 0; tries < 20; tries++) {
      const item = 1 + Math.floor(Math.random() * SELLOUT_ITEMS)
      if (sold.has(item)) continue
      const since = held.get(item)
      if (since === undefined || now - since > SELLOUT_TTL_S * 1000) return item
    }
    return undefined
  }
  try {
    const idle = rssMb(service.child.pid as number, 'VmRSS')
    console.log(`\n▶ sell-out: checkout + purchase of ${SELLOUT_ITEMS} items, ${SELLOUT_CONNECTIONS} connections`)
    const meter = meterFor(service.child)
    meter.start()
    const overflowsBefore = listenOverflows()
    const { instance, done } = run({
      url: service.url,
      connections: SELLOUT_CONNECTIONS,
      duration: 60,
      requests: [
        {
          method: 'POST',
          setupRequest: (req, ctx) => {
            const context = ctx as Flow
            context.epoch = epoch
            let item: number | undefined
            // Skipped: items seen sold, and items a connection of the crowd holds (if its purchase
            // fails the item comes back in the queue).
            while (cursor < queue.length && item === undefined) {
              const next = queue[cursor++] as number
              if (!sold.has(next) && !held.has(next)) item = next
            }
            item ??= anyFree()
            context.item = item
            if (item === undefined) return { ...req, method: 'GET', path: '/health' }
            expect.checkoutsSent++
            return { ...req, path: `/checkout?user_id=u${Math.floor(Math.random() * 5000)}&id=${item}` }
          },
          onResponse: (status, body, ctx) => {
            const context = ctx as Flow
            if (context.item === undefined) return
            if (status === 200) {
              const id = saleOf(body)
              bump(expect.acceptedBySale, id)
              if (Number.isNaN(saleId)) saleId = id
              else if (id !== saleId && context.epoch === epoch) newSale(id)
              context.code = (JSON.parse(body) as { code: string }).code
              held.set(context.item, Date.now())
              return
            }
            countRefusal(refusals, status, body)
            if (context.epoch !== epoch) return // an answer about the previous sale
            if (/item_sold|sold_out/.test(body)) sold.add(context.item)
            else queue.push(context.item) // reserved (may expire), limit, 503
          }
        },
        {
          method: 'POST',
          setupRequest: (req, ctx) => {
            const { code } = ctx as Flow
            return code ? { ...req, path: `/purchase?code=${code}` } : null as unknown as typeof req
          },
          onResponse: (status, body, ctx) => {
            const context = ctx as Flow
            const item = context.item as number
            if (context.epoch === epoch) held.delete(item)
            if (status !== 200) {
              countRefusal(refusals, status, body)
              if (context.epoch === epoch) queue.push(item)
              return
            }
            const id = saleOf(body)
            const soldInSale = (expect.soldBySale.get(id) ?? 0) + 1
            expect.soldBySale.set(id, soldInSale)
            if (id === saleId) sold.add(item)
            if (soldInSale === SELLOUT_ITEMS) {
              expect.soldOutSale = id
              soldOutAt = Date.now()
              instance.stop()
            }
          }
        }
      ]
    })
    const result = await done
    const cpu = meter.perRequest(result.requests.total)
    const seconds = soldOutAt ? (soldOutAt - started) / 1000 : NaN
    const peak = rssMb(service.child.pid as number)
    return { row: row('sell-out checkout+purchase', result, refusals, cpu, { idle, peak }, { sellOutSeconds: seconds, listenOverflows: listenOverflows() - overflowsBefore }), expect }
  } finally {
    await stop(service.child)
  }
}

/**
 * Invariants, from Postgres, after the service flushed and exited, checked sale by sale: no item
 * sold twice, no sale over its items, no user over the limit, every acknowledged checkout and
 * purchase committed, every checkout request the service read recorded.
 */
async function verify ({ service: { schema }, checkoutsSent, connections, acceptedBySale, soldBySale, sellsOut, soldOutSale, holdsOutliveRun }: Expectation): Promise<string[]> {
  const client = new pg.Client({ connectionString: base.DATABASE_URL })
  await client.connect()
  const failures: string[] = []
  try {
    const { rows: sales } = await client.query<{ id: number, starts_at: Date, item_count: number, sold: number, items_sold: number, held_twice: number, accepted: number, attempts: number, users_over: number }>(`
      SELECT s.id::int, s.starts_at, s.item_count,
        (SELECT count(*)::int FROM ${schema}.purchases p WHERE p.sale_id = s.id) AS sold,
        (SELECT count(DISTINCT p.item_id)::int FROM ${schema}.purchases p WHERE p.sale_id = s.id) AS items_sold,
        (SELECT count(*)::int - count(DISTINCT a.item_id)::int FROM ${schema}.checkout_attempts a WHERE a.sale_id = s.id AND a.outcome = 'accepted') AS held_twice,
        (SELECT count(*)::int FROM ${schema}.checkout_attempts a WHERE a.sale_id = s.id AND a.outcome = 'accepted') AS accepted,
        (SELECT count(*)::int FROM ${schema}.checkout_attempts a WHERE a.sale_id = s.id) AS attempts,
        (SELECT count(*)::int FROM (SELECT 1 FROM ${schema}.purchases p WHERE p.sale_id = s.id GROUP BY p.user_id HAVING count(*) > s.user_limit) o) AS users_over
      FROM ${schema}.sales s ORDER BY s.id`)
    const { rows: [total] } = await client.query<{ attempts: number }>(`SELECT count(*)::int AS attempts FROM ${schema}.checkout_attempts`)
    const used = sales.filter((s) => s.attempts > 0)
    console.log(used.length > 1
      ? `  ${schema}: the run crossed XX:00 and met ${used.length} sales; each is counted on its own:`
      : used.length === 1 ? `  ${schema}: the run stayed inside the hour of sale #${used[0]?.id}:` : `  ${schema}: no sale took a checkout:`)
    for (const s of used) {
      const where = `${schema} sale #${s.id} (${s.starts_at.toISOString().slice(11, 16)} UTC)`
      const acked = soldBySale.get(s.id) ?? 0
      const accepted = acceptedBySale.get(s.id) ?? 0
      console.log(`    sale #${s.id}: ${s.sold} sold (${acked} acknowledged), ${s.accepted} accepted checkouts (${accepted} acknowledged), ${s.attempts} attempt rows`)
      if (s.sold !== s.items_sold) failures.push(`${where}: ${s.sold} purchases for ${s.items_sold} items`)
      if (s.sold > s.item_count) failures.push(`${where}: ${s.sold} sold of ${s.item_count} items`)
      if (s.users_over !== 0) failures.push(`${where}: ${s.users_over} users over the limit`)
      if (s.sold < acked) failures.push(`${where}: ${acked} purchases acknowledged, ${s.sold} committed`)
      if (s.accepted < accepted) failures.push(`${where}: ${accepted} checkouts acknowledged, ${s.accepted} committed`)
      if (holdsOutliveRun && s.held_twice !== 0) failures.push(`${where}: ${s.held_twice} items reserved twice within the checkout TTL`)
      if (s.id === soldOutSale && s.sold !== s.item_count) failures.push(`${where}: sold ${s.sold}, expected ${s.item_count}`)
    }
    if (sellsOut && soldOutSale === undefined) failures.push(`${schema}: no sale sold out`)
    // autocannon may have sent requests the service never read before it stopped; every one it read is recorded.
    const attempts = total?.attempts ?? 0
    if (attempts > checkoutsSent || attempts < checkoutsSent - connections) {
      failures.push(`${schema}: ${attempts} attempt rows for ${checkoutsSent} checkout requests sent`)
    }
    console.log(`    ${attempts} attempt rows in all for ${checkoutsSent} checkout requests sent`)
    await client.query(`DROP SCHEMA ${schema} CASCADE`)
  } finally {
    await client.end()
  }
  return failures
}

/** The stampede on an empty schema and on one prefilled with --history attempts, --history-rounds times, alternating. */
async function historyComparison (): Promise<HistoryComparison> {
  const admin = new pg.Client({ connectionString: base.DATABASE_URL })
  await admin.connect()
  try {
    const h = await compareWithHistory(stampede, admin, { attempts: historyRows, days: historyDays, rounds: historyRounds, log: console.log })
    console.log('\n| run | load | req/s | rows per statement | backends opened | Postgres µs per committed row |\n|---|---:|---:|---:|---:|---:|')
    for (const r of h.runs) console.log(`| ${r.history ? 'full' : 'empty'} | ${r.load} | ${fmt(r.reqPerSec)} | ${r.rowsPerStatement} | ${r.backendsOpened} | ${r.pgCpuUsPerRow} |`)
    console.log(`\nhistory of ${fmt(h.prefill.attempts)} attempts (${h.prefill.seconds.toFixed(0)} s to fill): ` +
      `req/s ${fmt(h.empty.reqPerSec as number)} empty vs ${fmt(h.full.reqPerSec as number)} full (x${h.reqPerSecRatio}), ` +
      `Postgres CPU per committed row ${h.empty.pgCpuUsPerRow} µs vs ${h.full.pgCpuUsPerRow} µs (x${h.pgCpuPerRowRatio})`)
    return h
  } finally {
    await admin.end()
  }
}

const fmt = (n: number) => Number.isFinite(n) ? n.toLocaleString('en-US') : '-'

async function main (): Promise<void> {
  const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model, memGb: Math.round(totalmem() / 2 ** 30), loadavg: loadavg().map((l) => l.toFixed(2)), node: process.version }
  console.log(`flash-sale bench ${smoke ? '(smoke) ' : ''}${clusterMode ? '(cluster) ' : ''}on ${machine.cpus} cores, load ${machine.loadavg.join(' ')}; the load generator shares the cores`)
  if (pids.redis === 0 || pids.postgres === 0) console.log('(Redis or Postgres is not a local process: its CPU column stays empty)')

  const b = runs('bare') ? await bare() : undefined
  const s = runs('stampede') ? await stampede() : undefined
  const fixedRate = s ? Math.max(1, Math.round(s.row.reqPerSec / 2)) : DEFAULT_FIXED_RATE
  const l = runs('latency') ? await latency(fixedRate) : undefined
  const o = runs('sellout') ? await sellout() : undefined
  const history = historyRows > 0 ? await historyComparison() : undefined
  const rows = [b, s?.row, ...l?.rows ?? [], o?.row].filter((r) => r !== undefined)

  console.log('\n| scenario | req/s | p50 ms | p97.5 ms | p99 ms | errors | non-2xx (refusals) | CPU µs/req: service | Redis | Postgres | load gen | idle / peak RSS MB |')
  console.log('|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|')
  for (const r of rows) {
    const refusals = Object.entries(r.refusals).map(([k, v]) => `${k}: ${fmt(v)}`).join(', ')
    const cpu = r.cpuUsPerRequest
    console.log(`| ${r.scenario} | ${fmt(r.reqPerSec)} | ${r.p50} | ${r.p97_5} | ${r.p99} | ${r.errors + r.timeouts} | ${fmt(r.non2xx)}${refusals ? ` (${refusals})` : ''} | ` +
      `${fmt(cpu.service)} | ${fmt(cpu.redis)} | ${fmt(cpu.postgres)} | ${fmt(cpu.loadGenerator)} | ${r.idleRssMb ?? '-'} / ${r.peakRssMb ?? '-'} |`)
  }
  const throughputRatio = s && b ? s.row.reqPerSec / b.reqPerSec : null
  const cpuRatio = s && b ? s.row.cpuUsPerRequest.service / b.cpuUsPerRequest.service : null
  console.log(`\nservice CPU per checkout / bare route CPU per request: ${cpuRatio === null ? '-' : cpuRatio.toFixed(2)}` +
    `   stampede / bare req/s: ${throughputRatio === null ? '-' : (throughputRatio * 100).toFixed(0)}%` +
    `   sell-out of ${SELLOUT_ITEMS} items: ${o?.row.extra?.sellOutSeconds ?? '-'} s` +
    (o ? ` (connections dropped by a full listen queue, host-wide: ${o.row.extra?.listenOverflows})` : ''))

  console.log('\nverifying invariants in Postgres, sale by sale')
  const failures: string[] = []
  for (const expect of [s?.expect, l?.expect, o?.expect]) {
    if (expect !== undefined) failures.push(...await verify(expect))
  }

  mkdirSync('bench/results', { recursive: true })
  const file = `bench/results/${new Date().toISOString().replace(/[:.]/g, '-')}${smoke ? '-smoke' : ''}.json`
  const bySale = (m?: Map<number, number>) => Object.fromEntries(m ?? [])
  const sales = Object.fromEntries([s, l, o].filter((x) => x !== undefined).map(({ expect }) => [expect.service.schema, {
    acceptedBySale: bySale(expect.acceptedBySale), soldBySale: bySale(expect.soldBySale), soldOutSale: expect.soldOutSale ?? null
  }]))
  writeFileSync(file, JSON.stringify({
    runId, smoke, clusterMode, dist, nodeFlags: [...startFlags, ...nodeFlags], machine, pids, rows, serviceCpuCheckoutVsBare: cpuRatio, stampedeVsBare: throughputRatio, fixedRate, sales, history, failures
  }, null, 2))
  console.log(`results written to ${file}`)

  if (failures.length > 0) {
    console.error(`\nINVARIANTS BROKEN:\n- ${failures.join('\n- ')}`)
    process.exit(1)
  }
  console.log('invariants hold in every sale: no item sold twice, no user over the limit, every acknowledged checkout and purchase committed, every checkout recorded')
}

await main()
