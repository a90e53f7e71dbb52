/** What `npm run bench` prints, and the result file it writes to bench/results/. */
import { mkdirSync, writeFileSync } from 'node:fs'
import type { HistoryComparison } from './history.js'
import type { Row } from './measure.js'
import { TARGETS, type Figure, type Figures, type FloorComparison } from './rounds.js'
import { fmt } from './stats.js'

export function printRows (rows: Row[]): void {
  console.log('\n| scenario | req/s | p50 ms | p97.5 ms | p99 ms | errors | non-2xx (refusals) | CPU µs/req: service | Redis | Postgres | load gen | idle / peak RSS MB |')
  console.log('|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|')
  for (const r of rows) {
    const refusals = Object.entries(r.refusals).map(([k, v]) => `${k}: ${fmt(v)}`).join(', ')
    const cpu = r.cpuUsPerRequest
    console.log(`| ${r.scenario} | ${fmt(r.reqPerSec)} | ${r.p50} | ${r.p97_5} | ${r.p99} | ${r.errors + r.timeouts} | ${fmt(r.non2xx)}${refusals ? ` (${refusals})` : ''} | ` +
      `${fmt(cpu.service)} | ${fmt(cpu.redis)} | ${fmt(cpu.postgres)} | ${fmt(cpu.loadGenerator)} | ${r.idleRssMb ?? '-'} / ${r.peakRssMb ?? '-'} |`)
  }
  console.log('(req/s: answered per second, achieved; the fixed-rate rows name the rate they were offered)')
}

const LABELS: Record<Figure, string> = {
  service: 'service CPU µs',
  redis: 'Redis CPU µs',
  postgres: 'Postgres CPU µs',
  box: 'box CPU µs (service + Redis + Postgres)',
  loadGenerator: 'load generator CPU µs',
  reqPerSec: 'req/s'
}

/** The service against the floor (medians of the rounds), next to the bare route's figures. */
export function printFloorComparison (c: FloorComparison, bare: Row | undefined): void {
  const b = bare?.cpuUsPerRequest
  const bareFigures: Partial<Figures> = b && bare ? { ...b, box: b.service + b.redis + b.postgres, reqPerSec: bare.reqPerSec } : {}
  console.log(`\nthe service against the floor of the stack: medians of ${c.rounds} alternating round${c.rounds > 1 ? 's' : ''}, per request`)
  console.log('| per request | bare route | floor | stampede | stampede / floor | target | |')
  console.log('|---|---:|---:|---:|---:|---:|---|')
  for (const key of Object.keys(LABELS) as Figure[]) {
    const target = TARGETS[key]
    const goal = target?.atMost !== undefined ? `≤ ${target.atMost}×` : target?.atLeast !== undefined ? `≥ ${target.atLeast}×` : ''
    const met = c.met[key] === undefined ? '' : c.met[key] ? 'met' : 'NOT met'
    console.log(`| ${LABELS[key]} | ${fmt(bareFigures[key] ?? NaN)} | ${fmt(c.floor[key])} | ${fmt(c.stampede[key])} | ${c.ratios[key].toFixed(2)}× | ${goal} | ${met} |`)
  }
}

export function printHistory (h: HistoryComparison): void {
  console.log('\n| run | load | req/s | rows per statement | backends opened | Postgres µs per committed row |\n|---|---:|---:|---:|---:|---:|')
  for (const r of h.runs) console.log(`| ${r.history ? 'full' : 'empty'} | ${r.load} | ${fmt(r.reqPerSec)} | ${r.rowsPerStatement} | ${r.backendsOpened} | ${r.pgCpuUsPerRow} |`)
  console.log(`\nhistory of ${fmt(h.prefill.attempts)} attempts (${h.prefill.seconds.toFixed(0)} s to fill): ` +
    `req/s ${fmt(h.empty.reqPerSec)} empty vs ${fmt(h.full.reqPerSec)} full (x${h.reqPerSecRatio}), ` +
    `Postgres CPU per committed row ${h.empty.pgCpuUsPerRow} µs vs ${h.full.pgCpuUsPerRow} µs (x${h.pgCpuPerRowRatio})`)
}

/** Writes bench/results/<time>[-smoke].json and returns its path. */
export function writeResults (smoke: boolean, results: Record<string, unknown>): string {
  mkdirSync('bench/results', { recursive: true })
  const file = `bench/results/${new Date().toISOString().replace(/[:.]/g, '-')}${smoke ? '-smoke' : ''}.json`
  writeFileSync(file, JSON.stringify(results, null, 2))
  return file
}
