/**
 * The floor and the stampede in alternating rounds (floor first in odd rounds, stampede first in
 * even ones), under the same random load, and the service's figures as multiples of the floor's:
 * CPU µs per request of each process and of the box (service + Redis + Postgres), each the median
 * of its rounds, and req/s. Alternating back to back spreads the shared host's swings over both
 * sides; the medians keep one burst from deciding.
 */
import type { Row } from './measure.js'
import { ROUNDS, runs } from './options.js'
import { floor } from './scenarios/floor.js'
import { stampede } from './scenarios/stampede.js'
import { median } from './stats.js'
import type { Expectation } from './verify.js'

export interface Figures { service: number, redis: number, postgres: number, loadGenerator: number, box: number, reqPerSec: number }
export type Figure = keyof Figures

/** The targets: the service's figure over the floor's at most (CPU), or at least (req/s). */
export const TARGETS: Partial<Record<Figure, { atMost?: number, atLeast?: number }>> = {
  service: { atMost: 1.25 },
  redis: { atMost: 2 },
  postgres: { atMost: 1.5 },
  box: { atMost: 1.4 },
  reqPerSec: { atLeast: 0.8 }
}

export interface Rounds {
  rounds: number
  /** Every run's row, in the order they ran, and each side's. */
  rows: Row[]
  floorRows: Row[]
  stampedeRows: Row[]
  /** The stampedes' services, for the invariants. */
  expects: Expectation[]
}

export interface FloorComparison {
  rounds: number
  /** Each run's figures, in the order of its side's rounds. */
  runs: { floor: Figures[], stampede: Figures[] }
  /** Medians. */
  floor: Figures
  stampede: Figures
  /** stampede / floor of the medians. */
  ratios: Figures
  met: Partial<Record<Figure, boolean>>
}

export async function alternate (): Promise<Rounds> {
  const out: Rounds = { rounds: ROUNDS, rows: [], floorRows: [], stampedeRows: [], expects: [] }
  // Names of schemas too: letters, digits and _.
  const name = (side: string, round: number) => ROUNDS > 1 ? `${side}_${round}` : side
  const runFloor = async (round: number) => {
    const row = await floor(name('floor', round))
    out.rows.push(row)
    out.floorRows.push(row)
  }
  const runStampede = async (round: number) => {
    const s = await stampede(name('stampede', round))
    out.rows.push(s.row)
    out.stampedeRows.push(s.row)
    out.expects.push(s.expect)
  }
  for (let round = 1; round <= ROUNDS; round++) {
    const order = round % 2 === 1 ? [runFloor, runStampede] : [runStampede, runFloor]
    for (const side of order) {
      if ((side === runFloor && runs('floor')) || (side === runStampede && runs('stampede'))) await side(round)
    }
  }
  return out
}

/** Medians of a side's runs; the box is each run's service + Redis + Postgres, then the median. */
export function figures (rows: Row[]): Figures {
  const of = (pick: (r: Row) => number) => median(rows.map(pick))
  const cpu = rows.map((r) => r.cpuUsPerRequest)
  return {
    service: of((r) => r.cpuUsPerRequest.service),
    redis: of((r) => r.cpuUsPerRequest.redis),
    postgres: of((r) => r.cpuUsPerRequest.postgres),
    loadGenerator: of((r) => r.cpuUsPerRequest.loadGenerator),
    box: median(cpu.map((c) => c.service + c.redis + c.postgres)),
    reqPerSec: of((r) => r.reqPerSec)
  }
}

export function compare ({ rounds, floorRows, stampedeRows }: Rounds): FloorComparison | undefined {
  if (floorRows.length === 0 || stampedeRows.length === 0) return undefined
  const f = figures(floorRows)
  const s = figures(stampedeRows)
  const ratio = (key: Figure) => Math.round(s[key] / f[key] * 100) / 100
  const ratios: Figures = { service: ratio('service'), redis: ratio('redis'), postgres: ratio('postgres'), loadGenerator: ratio('loadGenerator'), box: ratio('box'), reqPerSec: ratio('reqPerSec') }
  const met: FloorComparison['met'] = {}
  for (const [key, target] of Object.entries(TARGETS) as Array<[Figure, { atMost?: number, atLeast?: number }]>) {
    met[key] = target.atMost !== undefined ? ratios[key] <= target.atMost : ratios[key] >= (target.atLeast as number)
  }
  return { rounds, runs: { floor: floorRows.map((r) => figures([r])), stampede: stampedeRows.map((r) => figures([r])) }, floor: f, stampede: s, ratios, met }
}
