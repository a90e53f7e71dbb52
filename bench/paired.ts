/**
 * Two builds or two sets of Node flags compared under the same host load: each round starts one
 * service per side together and drives both at once with the stampede's random checkouts (one
 * autocannon per side), so a burst of the host's other load falls on both sides alike. On this
 * shared machine the bench's back-to-back runs swing by more than a few percent of CPU; pairs do
 * not. Prints, per round, each side's service CPU µs per request (/proc) and peak RSS; the sides
 * swap places every round.
 *
 *   npx tsx bench/paired.ts --a-flags=--max-old-space-size=4096 --b-flags= [--a-dist=dist] [--b-dist=dist]
 *                           [--rounds=6] [--connections=200] [--seconds=10]
 *
 * Each side runs with the flags of `npm start` first, then its own (the last value wins), like
 * `npm run bench`. Build first (`npm run build`).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import autocannon from 'autocannon'
import pg from 'pg'
import { loadConfig } from '../src/config.js'
import { ownCpuUs } from './cpu.js'
import { npmStartFlags, rssMb, stop, untilHealthy } from './processes.js'
import { median } from './stats.js'

const option = (name: string, fallback: string) => process.argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback
const flagList = (value: string) => value.split(',').filter(Boolean)
const startFlags = npmStartFlags()
const sides = (['a', 'b'] as const).map((side) => ({ side, dist: option(`${side}-dist`, 'dist'), flags: flagList(option(`${side}-flags`, '')) }))
const rounds = Number(option('rounds', '6'))
const connections = Number(option('connections', '200'))
const seconds = Number(option('seconds', '10'))
const ITEMS = 10_000
const runId = `paired_${Date.now().toString(36)}_${randomBytes(2).toString('hex')}`

type Side = typeof sides[number]
interface Running { side: Side, child: ChildProcess, url: string, schema: string }

async function start (side: Side, port: number, schema: string): Promise<Running> {
  const child = spawn(process.execPath, [...startFlags, ...side.flags, `${side.dist}/src/server.js`], {
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', DATABASE_SCHEMA: schema, REDIS_KEY_PREFIX: `${schema}:`, SALE_ITEMS: String(ITEMS) },
    stdio: ['ignore', 'inherit', 'inherit']
  })
  const url = `http://127.0.0.1:${port}`
  await untilHealthy(child, url, `side ${side.side}`, 300)
  return { side, child, url, schema }
}

/** Service CPU µs per request and peak RSS of one side under the stampede's load. */
async function drive ({ child, url }: Running): Promise<{ usPerRequest: number, reqPerSec: number, peakMb: number }> {
  const before = ownCpuUs(child.pid as number)
  const result = await autocannon({
    url,
    connections,
    duration: seconds,
    requests: [{
      method: 'POST',
      setupRequest: (req) => ({ ...req, path: `/checkout?user_id=u${Math.floor(Math.random() * 1_000_000)}&id=${1 + Math.floor(Math.random() * ITEMS)}` })
    }]
  })
  const cpu = ownCpuUs(child.pid as number) - before
  return { usPerRequest: Math.round(cpu / result.requests.total), reqPerSec: Math.round(result.requests.average), peakMb: rssMb(child.pid as number) }
}

const admin = new pg.Client({ connectionString: loadConfig().DATABASE_URL })
await admin.connect()
const ratios: number[] = []
try {
  for (let round = 1; round <= rounds; round++) {
    const order = round % 2 === 1 ? sides : [...sides].reverse()
    const port = 3900 + Math.floor(Math.random() * 500)
    const running = await Promise.all(order.map((side, i) => start(side, port + i, `${runId}_${round}_${side.side}`)))
    try {
      const [first, second] = await Promise.all(running.map(drive))
      const bySide = Object.fromEntries(running.map((r, i) => [r.side.side, i === 0 ? first : second]))
      const [a, b] = [bySide.a, bySide.b]
      if (a === undefined || b === undefined) throw new Error('a side did not report')
      ratios.push(b.usPerRequest / a.usPerRequest)
      console.log(`round ${round} ${new Date().toISOString().slice(11, 19)} UTC load ${readFileSync('/proc/loadavg', 'utf8').split(' ')[0]}: ` +
        `a ${a.usPerRequest} µs/req ${a.reqPerSec} req/s peak ${a.peakMb} MB | b ${b.usPerRequest} µs/req ${b.reqPerSec} req/s peak ${b.peakMb} MB | b/a ${(b.usPerRequest / a.usPerRequest).toFixed(2)}`)
    } finally {
      await Promise.all(running.map(async ({ child, schema }) => {
        await stop(child)
        await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
      }))
    }
  }
} finally {
  await admin.end()
}
console.log(`a: ${sides[0]?.dist} [${[...startFlags, ...(sides[0]?.flags ?? [])].join(' ')}]  b: ${sides[1]?.dist} [${[...startFlags, ...(sides[1]?.flags ?? [])].join(' ')}]`)
console.log(`b dearer than a in ${ratios.filter((r) => r > 1).length} of ${ratios.length} rounds; median b/a ${median(ratios).toFixed(2)}`)
