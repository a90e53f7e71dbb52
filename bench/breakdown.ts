/**
 * What a checkout costs, step by step, in each process, beside the stack's floor (bench/floor-server.ts:
 * the least a checkout can cost with Fastify + ioredis + pg: one EVALSHA, one batched row): the stampede
 * (random users and items, as `npm run bench`) against each, run with `--cpu-prof`, then
 * - the service's CPU µs per request split by step, from its V8 profile: each sample goes to the
 *   first step its stack names, from the leaf up (so a socket write under the response belongs to
 *   the response, one under ioredis to the decision script);
 * - Redis's µs per request by command, from `INFO commandstats` before and after (a script's
 *   commands are counted on their own and inside `evalsha`; what is left is the script's own
 *   overhead: Lua, argument and reply conversion);
 * - Postgres's CPU µs per request (and, for the service, rows per statement from its metrics).
 * Other clients of the same Redis add to its counts: run it on a quiet machine.
 *
 * Both run as `npm run bench` runs them (bench/launch.ts), under its stampede's crowd and connections.
 *
 *   npm run build && npx tsx bench/breakdown.ts [--seconds=10] [--dist=dist]
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ChildProcess } from 'node:child_process'
import autocannon from 'autocannon'
import { Redis } from 'ioredis'
import pg from 'pg'
import { base, meterFor, runId, startFloor, startService } from './launch.js'
import { randomCheckout } from './measure.js'
import { CONNECTIONS, STAMPEDE_ITEMS, STAMPEDE_USERS } from './options.js'
import { stop } from './processes.js'

const seconds = Number(process.argv.find((arg) => arg.startsWith('--seconds='))?.slice('--seconds='.length) ?? 10)

interface CallFrame { functionName: string, url: string }
interface Profile { nodes: Array<{ id: number, callFrame: CallFrame, children?: number[] }>, samples: number[] }

/** A checkout's steps, each recognised by the code it runs in (the first match from the leaf up wins). */
const STEPS: Array<[string, (frame: CallFrame) => boolean]> = [
  ['garbage collection', (f) => f.functionName === '(garbage collector)'],
  ['metrics (per-response hook)', (f) => /prom-client|\/plugins\/metrics\.js|\/src\/http\/metrics\.js/.test(f.url)],
  ['security headers', (f) => /\/plugins\/security\.js/.test(f.url)],
  ['decision script (ioredis)', (f) => /node_modules\/(ioredis|@ioredis|redis-parser|redis-errors|standard-as-callback|denque|cluster-key-slot)\/|\/src\/sale\/inventory\.js|\/src\/redis\//.test(f.url)],
  ['attempt row (pg, batch writer)', (f) => /node_modules\/(pg|pg-pool|pg-protocol|pg-types|postgres-array|postgres-date)\/|\/src\/db\/|\/src\/sale\/record-writers\.js/.test(f.url)],
  ['validation (query string, schema)', (f) => /ajv|fast-querystring|\/src\/http\/validation\.js/.test(f.url) || (f.url === '' && /^validate/.test(f.functionName))],
  ['refusal as an error (error handler)', (f) => /\/plugins\/errors\.js|fastify\/lib\/error-handler\.js|\/src\/sale\/errors\.js|\/src\/http\/checkout-attempts\.js/.test(f.url)],
  ['response (serialize, write)', (f) => /fast-json-stringify|fastify\/lib\/(reply|error-serializer)\.js|node:_http_outgoing/.test(f.url)],
  ['HTTP parse, routing, hooks', (f) => /node:_http_server|node:_http_common|find-my-way|fastify\/(fastify\.js|lib\/)|\/plugins\//.test(f.url)],
  ['sale rules (src/sale, routes)', (f) => /\/src\/|\/routes\//.test(f.url)]
]
const RUNTIME = 'Node runtime (event loop, sockets, promises)'

/** Busy samples of a V8 CPU profile, by step. */
function samplesByStep (profile: Profile): Map<string, number> {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  const counts = new Map<string, number>()
  for (const sample of profile.samples) {
    const leaf = byId.get(sample)?.callFrame.functionName
    if (leaf === '(idle)' || leaf === '(program)') continue
    let step = RUNTIME
    for (let id: number | undefined = sample; id !== undefined; id = parent.get(id)) {
      const frame = byId.get(id)?.callFrame as CallFrame
      const match = STEPS.find(([, test]) => test(frame))
      if (match) { step = match[0]; break }
    }
    counts.set(step, (counts.get(step) ?? 0) + 1)
  }
  return counts
}

async function commandStats (redis: Redis): Promise<Map<string, number>> {
  const usec = new Map<string, number>()
  for (const [, name, value] of (await redis.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=\d+,usec=(\d+)/gm)) usec.set(name as string, Number(value))
  return usec
}

/** A Prometheus counter's value from a /metrics scrape (summed over its labels when no label filter). */
const scraped = (text: string, name: string, filter = ''): number =>
  [...text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, 'gm'))].filter((m) => (m[1] ?? '').includes(filter)).reduce((sum, m) => sum + Number(m[2]), 0)

interface Measured {
  requests: number
  reqPerSec: number
  cpu: { service: number, redis: number, postgres: number }
  /** Busy profile samples by step. */
  steps: Map<string, number>
  /** Redis µs per command during the run. */
  redis: Map<string, number>
  /** Attempt rows and the statements that wrote them (the service's metrics; absent for the floor). */
  batches?: { rows: number, statements: number }
}

const redis = new Redis(base.REDIS_URL)
const admin = new pg.Client({ connectionString: base.DATABASE_URL })
await admin.connect()

const counted = (text: string, name: string) => scraped(text, `flash_sale_${name}`, 'writer="checkout_attempts"')

/** Starts a process with `start` (its CPU profile into a directory of its own), drives the stampede at it, stops it and reads the profile. */
async function measure (start: (profileDir: string) => Promise<{ url: string, child: ChildProcess }>, withMetrics: boolean): Promise<Measured> {
  const profileDir = mkdtempSync(join(tmpdir(), 'flash-sale-breakdown-'))
  const { url, child } = await start(profileDir)
  try {
    const metricsBefore = withMetrics ? await (await fetch(`${url}/metrics`)).text() : ''
    const redisBefore = await commandStats(redis)
    const meter = meterFor(child)
    meter.start()
    const result = await autocannon({
      url,
      connections: CONNECTIONS,
      duration: seconds,
      requests: [{ method: 'POST', setupRequest: (req) => ({ ...req, path: randomCheckout(STAMPEDE_USERS, STAMPEDE_ITEMS) }) }]
    })
    const requests = result.requests.total
    const cpu = meter.perRequest(requests)
    const redisAfter = await commandStats(redis)
    const metricsAfter = withMetrics ? await (await fetch(`${url}/metrics`)).text() : ''
    await stop(child)
    const file = readdirSync(profileDir).find((name) => name.endsWith('.cpuprofile')) as string
    return {
      requests,
      reqPerSec: Math.round(result.requests.average),
      cpu,
      steps: samplesByStep(JSON.parse(readFileSync(join(profileDir, file), 'utf8')) as Profile),
      redis: new Map([...redisAfter].map(([name, usec]) => [name, usec - (redisBefore.get(name) ?? 0)] as const).filter(([, usec]) => usec > 0)),
      ...(withMetrics && {
        batches: {
          rows: counted(metricsAfter, 'batch_rows_total') - counted(metricsBefore, 'batch_rows_total'),
          statements: counted(metricsAfter, 'batch_flush_duration_seconds_count') - counted(metricsBefore, 'batch_flush_duration_seconds_count')
        }
      })
    }
  } finally {
    await stop(child)
    rmSync(profileDir, { recursive: true, force: true })
  }
}

const us = (n: number) => n.toFixed(1)
const ratio = (a: number, b: number) => b > 0 ? `${(a / b).toFixed(2)}×` : '-'

/** Service µs per request by step: each side's CPU split by its profile's shares. */
function printSteps (floorRun: Measured, service: Measured): void {
  const stepUs = (m: Measured, step: string) => {
    const busy = [...m.steps.values()].reduce((a, b) => a + b, 0)
    return m.cpu.service * (m.steps.get(step) ?? 0) / busy
  }
  const names = [...new Set([...service.steps.keys(), ...floorRun.steps.keys()])].sort((a, b) => stepUs(service, b) - stepUs(service, a))
  console.log('\n| service process, µs CPU per request | floor | service | service − floor |\n|---|---:|---:|---:|')
  for (const step of names) console.log(`| ${step} | ${us(stepUs(floorRun, step))} | ${us(stepUs(service, step))} | ${us(stepUs(service, step) - stepUs(floorRun, step))} |`)
  console.log(`| **all** | ${floorRun.cpu.service} | ${service.cpu.service} | ${service.cpu.service - floorRun.cpu.service} (${ratio(service.cpu.service, floorRun.cpu.service)}) |`)
}

/** Redis µs per request by command; a script's own overhead is evalsha minus the commands it ran. */
function printRedis (floorRun: Measured, service: Measured): void {
  const scripts = (m: Measured) => (m.redis.get('evalsha') ?? 0) + (m.redis.get('eval') ?? 0)
  const perRequest = (m: Measured, usec: number) => usec / m.requests
  const commands = [...service.redis.keys()].filter((name) => name !== 'evalsha' && name !== 'eval')
    .sort((a, b) => (service.redis.get(b) ?? 0) - (service.redis.get(a) ?? 0))
  console.log('\n| Redis, µs per request (INFO commandstats) | floor | service |\n|---|---:|---:|')
  for (const name of commands) console.log(`| ${name} | ${us(perRequest(floorRun, floorRun.redis.get(name) ?? 0))} | ${us(perRequest(service, service.redis.get(name) ?? 0))} |`)
  const own = (m: Measured) => perRequest(m, scripts(m) - [...m.redis].filter(([n]) => n !== 'evalsha' && n !== 'eval').reduce((sum, [, v]) => sum + v, 0))
  console.log(`| scripts' own work (Lua, argument and reply conversion) | ${us(own(floorRun))} | ${us(own(service))} |`)
  const rest = (m: Measured) => m.cpu.redis - perRequest(m, scripts(m))
  console.log(`| the rest of redis-server: reading, parsing, replying (below 0 when commandstats, which times by the wall clock, counted waits) | ${us(rest(floorRun))} | ${us(rest(service))} |`)
  console.log(`| **redis-server CPU** | ${floorRun.cpu.redis} | ${service.cpu.redis} (${ratio(service.cpu.redis, floorRun.cpu.redis)}) |`)
}

try {
  // The floor drops its own schema when stopped; the service's is dropped below.
  const floorRun = await measure((profileDir) => startFloor('breakdown_floor', profileDir), false)
  const service = await measure((profileDir) => startService('breakdown', STAMPEDE_ITEMS, {}, profileDir), true)
  for (const [name, m] of [['floor', floorRun], ['service', service]] as const) {
    console.log(`${name}: ${m.requests.toLocaleString('en-US')} checkouts in ${seconds} s (${m.reqPerSec} req/s), ${CONNECTIONS} connections`)
  }
  printSteps(floorRun, service)
  printRedis(floorRun, service)
  const { rows, statements } = service.batches as { rows: number, statements: number }
  console.log(`\nPostgres CPU µs per request: floor ${floorRun.cpu.postgres}, service ${service.cpu.postgres} (${ratio(service.cpu.postgres, floorRun.cpu.postgres)}); ` +
    `the service wrote ${rows.toLocaleString('en-US')} attempt rows in ${statements.toLocaleString('en-US')} statements (${(rows / statements).toFixed(1)} rows each)`)
} finally {
  await admin.query(`DROP SCHEMA IF EXISTS ${runId}_breakdown CASCADE`)
  await admin.end()
  redis.disconnect()
}
