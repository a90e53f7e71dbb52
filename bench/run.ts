/**
 * `npm run bench`: autocannon against the real service (its own process, local Postgres and
 * Redis), next to a bare Fastify route as the machine's ceiling. Prints a table, writes
 * bench/results/<time>.json, then checks the invariants in Postgres and exits 1 if one broke.
 *
 *   npm run bench                 full run (10 s per scenario, 10,000-item sell-out)
 *   npm run bench -- --smoke      a few seconds, small sale, no thresholds (CI)
 *   npm run bench -- --cluster    service in cluster mode (one worker per core)
 *   npm run bench -- --only=sellout   only the named scenarios (bare, stampede, sellout; comma-separated)
 *   BENCH_PROFILE=1 npm run bench  also write a V8 CPU profile per process to bench/results/
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, totalmem } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import autocannon from 'autocannon'
import pg from 'pg'
import { loadConfig } from '../src/config.js'

const smoke = process.argv.includes('--smoke')
const clusterMode = process.argv.includes('--cluster')
const only = process.argv.find((arg) => arg.startsWith('--only='))?.slice('--only='.length).split(',')
const runs = (scenario: 'bare' | 'stampede' | 'sellout') => only === undefined || only.includes(scenario)
const DURATION_S = smoke ? 2 : 10
const CONNECTIONS = 200
const SELLOUT_ITEMS = smoke ? 500 : 10_000
const SELLOUT_CONNECTIONS = smoke ? 100 : 1000
const USER_LIMIT = 10
const runId = `bench_${Date.now().toString(36)}_${randomBytes(2).toString('hex')}`
const base = loadConfig()

interface Service { url: string, child: ChildProcess, schema: string }

let nextPort = 3400 + Math.floor(Math.random() * 500)

/** Starts a process that logs pino's "Server listening" line, and waits for it. */
async function startProcess (args: string[], env: Record<string, string>): Promise<{ url: string, child: ChildProcess }> {
  const port = nextPort++
  const profile = process.env.BENCH_PROFILE ? ['--cpu-prof', '--cpu-prof-dir=bench/results'] : []
  const child = spawn(process.execPath, [...profile, ...args], {
    env: { ...process.env, ...env, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'inherit', 'inherit']
  })
  const url = `http://127.0.0.1:${port}`
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`${args.join(' ')} exited with ${child.exitCode}`)
    try {
      if ((await fetch(`${url}/health`)).ok) return { url, child }
    } catch { /* not listening yet */ }
    await sleep(100)
  }
  throw new Error(`${args.join(' ')} did not start`)
}

async function startService (name: string, items: number, env: Record<string, string> = {}): Promise<Service> {
  const schema = `${runId}_${name}`
  const { url, child } = await startProcess([clusterMode ? 'dist/src/cluster.js' : 'dist/src/server.js'], {
    DATABASE_SCHEMA: schema,
    REDIS_KEY_PREFIX: `${schema}:`,
    SALE_ITEMS: String(items),
    USER_LIMIT: String(USER_LIMIT),
    ...env
  })
  return { url, child, schema }
}

/** Peak resident set (VmHWM) of a process and its direct children (cluster workers), in MB. */
function peakRssMb (pid: number): number {
  const hwm = (p: number) => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0) / 1024
  let children: number[] = []
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
  } catch { /* no children file */ }
  return Math.round([pid, ...children].reduce((sum, p) => sum + hwm(p), 0))
}

async function stop (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  await exited
}

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
  peakRssMb: number | null
  seconds: number
  extra?: Record<string, number | string>
}

function row (scenario: string, result: autocannon.Result, refusals: Record<string, number>, peakRssMb: number | null, extra?: Row['extra']): Row {
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
    peakRssMb,
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

const run = (opts: autocannon.Options) => {
  let instance!: autocannon.Instance
  const done = new Promise<autocannon.Result>((resolve, reject) => {
    instance = autocannon(opts, (err, result) => err ? reject(err) : resolve(result))
  })
  autocannon.track(instance, { renderResultsTable: false, renderLatencyTable: false })
  return { instance, done }
}

/** What one autocannon connection remembers between its checkout and its purchase. */
interface Flow { item?: number, code?: string }

/** Scenario 1: the machine's ceiling, a bare Fastify POST route answering a small JSON body. */
async function bare (): Promise<Row> {
  const { url, child } = await startProcess(['--import', 'tsx', 'bench/bare-server.ts'], {})
  try {
    console.log(`\n▶ bare Fastify route, ${CONNECTIONS} connections, ${DURATION_S} s`)
    const result = await run({ url: `${url}/checkout?user_id=u1&id=1`, method: 'POST', connections: CONNECTIONS, duration: DURATION_S }).done
    return row('bare fastify route', result, {}, peakRssMb(child.pid as number))
  } finally {
    await stop(child)
  }
}

/** Scenario 2: the stampede: random users checking out random items of a fresh sale. */
async function stampede (): Promise<{ row: Row, service: Service, checkouts: number }> {
  const service = await startService('stampede', 10_000)
  const refusals: Record<string, number> = {}
  let checkouts = 0
  try {
    console.log(`\n▶ stampede: POST /checkout, random users and items, ${CONNECTIONS} connections, ${DURATION_S} s`)
    const result = await run({
      url: service.url,
      connections: CONNECTIONS,
      duration: DURATION_S,
      requests: [{
        method: 'POST',
        setupRequest: (req) => {
          checkouts++
          return { ...req, path: `/checkout?user_id=u${Math.floor(Math.random() * 1_000_000)}&id=${1 + Math.floor(Math.random() * 10_000)}` }
        },
        onResponse: (status, body) => countRefusal(refusals, status, body)
      }]
    }).done
    return { row: row('stampede checkout', result, refusals, peakRssMb(service.child.pid as number)), service, checkouts }
  } finally {
    await stop(service.child)
  }
}

/**
 * Scenario 3: the sell-out: checkout then purchase until every item is sold. The crowd shares
 * what it has learned (items seen sold are not tried again; a reserved one is retried later), as
 * buyers refreshing a listing would; the service's own answers decide everything.
 */
async function sellout (): Promise<{ row: Row, service: Service, checkouts: number }> {
  // A connection that fails between its checkout and its purchase (autocannon then starts the
  // flow over, the code lost) abandons its reservation, as a real buyer may: with the default
  // 10-minute TTL the item would stay held past the bench's window. Abandoned holds here expire
  // after a few seconds, so the sale sells out exactly whatever the client's luck.
  const service = await startService('sellout', SELLOUT_ITEMS, { CHECKOUT_TTL_SECONDS: '5' })
  const refusals: Record<string, number> = {}
  const queue = Array.from({ length: SELLOUT_ITEMS }, (_, i) => i + 1).sort(() => Math.random() - 0.5)
  let cursor = 0
  let sold = 0
  let checkouts = 0
  let soldOutAt = 0
  const started = Date.now()
  try {
    console.log(`\n▶ sell-out: checkout + purchase of ${SELLOUT_ITEMS} items, ${SELLOUT_CONNECTIONS} connections`)
    const { instance, done } = run({
      url: service.url,
      connections: SELLOUT_CONNECTIONS,
      duration: 60,
      requests: [
        {
          method: 'POST',
          setupRequest: (req, ctx) => {
            const context = ctx as Flow
            // Once every item is taken the crowd keeps asking for random ones, as a crowd does.
            const item = cursor < queue.length ? queue[cursor++] as number : 1 + Math.floor(Math.random() * SELLOUT_ITEMS)
            context.item = item
            checkouts++
            return { ...req, path: `/checkout?user_id=u${Math.floor(Math.random() * 5000)}&id=${item}` }
          },
          onResponse: (status, body, ctx) => {
            const context = ctx as Flow
            countRefusal(refusals, status, body)
            if (status === 200) context.code = (JSON.parse(body) as { code: string }).code
            else if (!/item_sold|sold_out/.test(body)) queue.push(context.item as number) // reserved (may expire), limit, 503
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
            countRefusal(refusals, status, body)
            if (status !== 200) queue.push(context.item as number)
            else if (++sold === SELLOUT_ITEMS) {
              soldOutAt = Date.now()
              instance.stop()
            }
          }
        }
      ]
    })
    const result = await done
    const seconds = soldOutAt ? (soldOutAt - started) / 1000 : NaN
    return { row: row('sell-out checkout+purchase', result, refusals, peakRssMb(service.child.pid as number), { sold, sellOutSeconds: seconds }), service, checkouts }
  } finally {
    await stop(service.child)
  }
}

/** Invariants, from Postgres, after the service flushed and exited. */
async function verify (schema: string, checkoutsSent: number, connections: number, expectSold?: number): Promise<string[]> {
  const client = new pg.Client({ connectionString: base.DATABASE_URL })
  await client.connect()
  const failures: string[] = []
  try {
    const q = async (text: string) => (await client.query(text)).rows[0] as Record<string, number>
    const sold = await q(`SELECT count(*)::int AS n, count(DISTINCT (sale_id, item_id))::int AS distinct_items FROM ${schema}.purchases`)
    if (sold.n !== sold.distinct_items) failures.push(`${schema}: ${sold.n} purchases for ${sold.distinct_items} items`)
    if (expectSold !== undefined && sold.n !== expectSold) failures.push(`${schema}: sold ${sold.n}, expected ${expectSold}`)
    const over = await q(`SELECT count(*)::int AS n FROM (SELECT 1 FROM ${schema}.purchases GROUP BY sale_id, user_id HAVING count(*) > ${USER_LIMIT}) o`)
    if (over.n !== 0) failures.push(`${schema}: ${over.n} users over the limit`)
    const attempts = await q(`SELECT count(*)::int AS n FROM ${schema}.checkout_attempts`)
    // autocannon may have sent requests the service never read before it stopped; every one it read is recorded.
    if (attempts.n === undefined || attempts.n > checkoutsSent || attempts.n < checkoutsSent - connections) {
      failures.push(`${schema}: ${attempts.n} attempt rows for ${checkoutsSent} checkout requests sent`)
    }
    console.log(`  ${schema}: ${sold.n} sold, ${attempts.n} attempt rows for ${checkoutsSent} checkout requests sent`)
    await client.query(`DROP SCHEMA ${schema} CASCADE`)
  } finally {
    await client.end()
  }
  return failures
}

const fmt = (n: number) => Number.isFinite(n) ? n.toLocaleString('en-US') : '-'

async function main (): Promise<void> {
  const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model, memGb: Math.round(totalmem() / 2 ** 30), loadavg: loadavg().map((l) => l.toFixed(2)), node: process.version }
  console.log(`flash-sale bench ${smoke ? '(smoke) ' : ''}${clusterMode ? '(cluster) ' : ''}on ${machine.cpus} cores, load ${machine.loadavg.join(' ')}; the load generator shares the cores`)

  const b = runs('bare') ? await bare() : undefined
  const s = runs('stampede') ? await stampede() : undefined
  const o = runs('sellout') ? await sellout() : undefined
  const rows = [b, s?.row, o?.row].filter((r) => r !== undefined)

  console.log('\n| scenario | req/s | p50 ms | p97.5 ms | p99 ms | errors | non-2xx (refusals) | peak RSS MB |')
  console.log('|---|---:|---:|---:|---:|---:|---|---:|')
  for (const r of rows) {
    const refusals = Object.entries(r.refusals).map(([k, v]) => `${k}: ${fmt(v)}`).join(', ')
    console.log(`| ${r.scenario} | ${fmt(r.reqPerSec)} | ${r.p50} | ${r.p97_5} | ${r.p99} | ${r.errors + r.timeouts} | ${fmt(r.non2xx)}${refusals ? ` (${refusals})` : ''} | ${r.peakRssMb ?? '-'} |`)
  }
  const ratio = s && b ? s.row.reqPerSec / b.reqPerSec : null
  console.log(`\nstampede / bare: ${ratio === null ? '-' : (ratio * 100).toFixed(0)}%   sell-out of ${SELLOUT_ITEMS} items: ${o?.row.extra?.sellOutSeconds ?? '-'} s`)

  console.log('\nverifying invariants in Postgres')
  const failures = [
    ...s ? await verify(s.service.schema, s.checkouts, CONNECTIONS) : [],
    ...o ? await verify(o.service.schema, o.checkouts, SELLOUT_CONNECTIONS, SELLOUT_ITEMS) : []
  ]

  mkdirSync('bench/results', { recursive: true })
  const file = `bench/results/${new Date().toISOString().replace(/[:.]/g, '-')}${smoke ? '-smoke' : ''}.json`
  writeFileSync(file, JSON.stringify({ runId, smoke, clusterMode, machine, rows, stampedeVsBare: ratio, failures }, null, 2))
  console.log(`results written to ${file}`)

  if (failures.length > 0) {
    console.error(`\nINVARIANTS BROKEN:\n- ${failures.join('\n- ')}`)
    process.exit(1)
  }
  console.log('invariants hold: no item sold twice, no user over the limit, every checkout recorded')
}

await main()
