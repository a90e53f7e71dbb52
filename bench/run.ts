/**
 * `npm run bench`: autocannon against the real service (its own process, local Postgres and
 * Redis), judged against the floor of the stack (bench/floor-server.ts) in alternating rounds and
 * shown next to a bare Fastify route. Prints the CPU time per request of every process involved
 * and the service/floor ratios against their targets, writes bench/results/<time>.json, then
 * checks the invariants in Postgres, sale by sale, and exits 1 if one broke. Method, flags and how
 * to read a run: bench/README.md.
 *
 *   npm run bench                 full run (10 s per scenario, 2 rounds, 10,000-item sell-out)
 *   npm run bench -- --smoke      a few seconds per scenario, 1 round, small sale, no thresholds (CI)
 *   npm run bench -- --only=floor,stampede --rounds=3   scenarios (bare, floor, stampede, latency, sellout) and rounds
 *   npm run bench -- --cluster | --dist=../other/dist | --node-flags=a,b | --history=20000000
 *   BENCH_PROFILE=1 npm run bench  also write a V8 CPU profile per process to bench/results/
 *
 * A scenario that crosses XX:00 meets two sales: the bench counts each sale on its own (the
 * crowd of the sell-out starts over on the new sale) and says so in its output.
 */
import { cpus, loadavg, totalmem } from 'node:os'
import pg from 'pg'
import { compareWithHistory, type HistoryComparison } from './history.js'
import { base, pids, runId } from './launch.js'
import type { Row } from './measure.js'
import {
  clusterMode, DEFAULT_FIXED_RATE, dist, historyDays, historyRounds, historyRows, nodeFlags, ROUNDS, runs, SELLOUT_ITEMS, smoke, startFlags
} from './options.js'
import { printFloorComparison, printHistory, printRows, writeResults } from './report.js'
import { alternate, compare, figures } from './rounds.js'
import { bare } from './scenarios/bare.js'
import { latency } from './scenarios/latency.js'
import { sellout } from './scenarios/sellout.js'
import { stampede } from './scenarios/stampede.js'
import { fmt } from './stats.js'
import { ACKNOWLEDGED, verify } from './verify.js'

/** The stampede on an empty schema and on one prefilled with --history attempts, --history-rounds times, alternating. */
async function historyComparison (): Promise<HistoryComparison> {
  const admin = new pg.Client({ connectionString: base.DATABASE_URL })
  await admin.connect()
  try {
    const h = await compareWithHistory(stampede, admin, { attempts: historyRows, days: historyDays, rounds: historyRounds, log: console.log })
    printHistory(h)
    return h
  } finally {
    await admin.end()
  }
}

async function main (): Promise<void> {
  const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model, memGb: Math.round(totalmem() / 2 ** 30), loadavg: loadavg().map((l) => l.toFixed(2)), node: process.version }
  console.log(`flash-sale bench ${smoke ? '(smoke) ' : ''}${clusterMode ? '(cluster) ' : ''}on ${machine.cpus} cores, load ${machine.loadavg.join(' ')}; the load generator shares the cores`)
  if (pids.redis === 0 || pids.postgres === 0) console.log('(Redis or Postgres is not a local process: its CPU column stays empty)')

  const b = runs('bare') ? await bare() : undefined
  const rounds = await alternate()
  const stampedeFigures = rounds.stampedeRows.length > 0 ? figures(rounds.stampedeRows) : undefined
  const stampedeReqPerSec = stampedeFigures?.reqPerSec ?? NaN
  const fixedRate = Number.isFinite(stampedeReqPerSec) ? Math.max(1, Math.round(stampedeReqPerSec / 2)) : DEFAULT_FIXED_RATE
  const l = runs('latency') ? await latency(fixedRate) : undefined
  const o = runs('sellout') ? await sellout() : undefined
  const history = historyRows > 0 ? await historyComparison() : undefined
  const rows = [b, ...rounds.rows, ...l?.rows ?? [], o?.row].filter((r): r is Row => r !== undefined)

  printRows(rows)
  const floorComparison = compare(rounds)
  if (floorComparison) printFloorComparison(floorComparison, b)
  else if (rounds.floorRows.length + rounds.stampedeRows.length > 0) console.log('\n(the service/floor ratios need both the floor and the stampede)')
  const serviceCpu = stampedeFigures?.service ?? NaN
  const throughputRatio = b ? stampedeReqPerSec / b.reqPerSec : NaN
  const cpuRatio = b ? serviceCpu / b.cpuUsPerRequest.service : NaN
  const soldOutIn = Number(o?.row.extra?.sellOutSeconds)
  const sellOut = Number.isFinite(soldOutIn) ? `${soldOutIn.toFixed(1)} s` : 'not sold out'
  console.log(`\nservice CPU per checkout / bare route CPU per request: ${Number.isFinite(cpuRatio) ? cpuRatio.toFixed(2) : '-'}` +
    `   stampede / bare req/s: ${Number.isFinite(throughputRatio) ? `${(throughputRatio * 100).toFixed(0)}%` : '-'}` +
    (o ? `   sell-out of ${fmt(SELLOUT_ITEMS)} items: ${sellOut} (connections dropped by a full listen queue, host-wide: ${o.row.extra?.listenOverflows})` : ''))

  console.log(`\nverifying invariants in Postgres, sale by sale (${ACKNOWLEDGED})`)
  const expects = [...rounds.expects, l?.expect, o?.expect].filter((e) => e !== undefined)
  const failures: string[] = []
  for (const expect of expects) failures.push(...await verify(expect))

  const bySale = (m: Map<number, number>) => Object.fromEntries(m)
  const sales = Object.fromEntries(expects.map((expect) => [expect.service.schema, {
    acceptedBySale: bySale(expect.acceptedBySale), soldBySale: bySale(expect.soldBySale), soldOutSale: expect.soldOutSale ?? null
  }]))
  const file = writeResults(smoke, {
    runId,
    smoke,
    clusterMode,
    dist,
    nodeFlags: [...startFlags, ...nodeFlags],
    machine,
    pids,
    rounds: ROUNDS,
    rows,
    floorComparison: floorComparison ?? null,
    serviceCpuCheckoutVsBare: Number.isFinite(cpuRatio) ? cpuRatio : null,
    stampedeVsBare: Number.isFinite(throughputRatio) ? throughputRatio : null,
    fixedRate,
    sales,
    history,
    failures
  })
  console.log(`results written to ${file}`)

  if (failures.length > 0) {
    console.error(`\nINVARIANTS BROKEN:\n- ${failures.join('\n- ')}`)
    process.exit(1)
  }
  console.log('invariants hold in every sale: no item sold twice, no user over the limit, every acknowledged checkout and purchase committed, every checkout recorded')
}

await main()
