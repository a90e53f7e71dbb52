/**
 * Latency where it means something: checkouts, then purchases of the codes they got, each at a
 * fixed offered rate of half the stampede's maximum, sent open-loop (bench/paced.ts), so the
 * percentiles are service time rather than queueing, as long as the service keeps up: each run
 * says whether it achieved the rate it was offered.
 */
import type { ProcessCpu } from '../cpu.js'
import { meterFor, startService } from '../launch.js'
import { bump, countRefusal, randomCheckout, saleOf, type Row } from '../measure.js'
import { LATENCY_CONNECTIONS, LATENCY_DURATION_S, STAMPEDE_ITEMS, STAMPEDE_USERS } from '../options.js'
import { paced, type PacedOptions, type PacedResult } from '../paced.js'
import { rssMb, stop } from '../processes.js'
import { fmt } from '../stats.js'
import { expectation, type Expectation } from '../verify.js'

/**
 * Below this share of the offered rate a run says it fell short (its percentiles then hold
 * queueing). Not 1: the run's time includes the last answer's latency, which a service that keeps
 * up answers within a small share of even a 1 s smoke run.
 */
const REACHED = 0.95

export async function latency (rate: number): Promise<{ rows: Row[], expect: Expectation }> {
  const service = await startService('latency', STAMPEDE_ITEMS)
  const expect = expectation(service, LATENCY_CONNECTIONS, false)
  const codes: string[] = []
  const refusals: Record<string, number> = {}
  const purchaseRefusals: Record<string, number> = {}

  /** One paced run, measured, and its row; says what it achieved of the offered rate. */
  const fixedRate = async (what: string, opts: Omit<PacedOptions, 'url' | 'rate' | 'connections'>, refused: Record<string, number>): Promise<Row> => {
    const meter = meterFor(service.child)
    meter.start()
    const result = await paced({ url: service.url, rate, connections: LATENCY_CONNECTIONS, ...opts })
    const cpu = meter.perRequest(result.answered)
    const achieved = Math.round(result.answered / result.seconds)
    // The sender falls behind when the load generator's own event loop is starved (the host is busy).
    const senderLate = result.sendSeconds > result.sent / rate * 1.05
    console.log(`  ${what}: offered ${fmt(rate)}/s (${fmt(result.sent)} requests), achieved ${fmt(achieved)}/s ` +
      `(${fmt(result.answered)} answered in ${result.seconds.toFixed(2)} s${result.errors > 0 ? `, ${fmt(result.errors)} failed` : ''})` +
      (achieved >= rate * REACHED
        ? ''
        : `: did NOT reach the offered rate (${senderLate ? `the load generator took ${result.sendSeconds.toFixed(2)} s to send them` : 'the service answered slower than offered'}); its latencies include queueing`))
    return pacedRow(`${what} offered ${fmt(rate)}/s`, result, refused, cpu, { offeredRate: rate, achievedRate: achieved })
  }
  const pacedRow = (scenario: string, result: PacedResult, refused: Record<string, number>, cpu: ProcessCpu, extra: Row['extra']): Row => ({
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
    seconds: result.seconds,
    extra
  })

  try {
    console.log(`\n▶ latency: POST /checkout at ${fmt(rate)}/s for ${LATENCY_DURATION_S} s, then POST /purchase of its codes at ${fmt(rate)}/s (open loop)`)
    const checkoutRow = await fixedRate('checkout', {
      count: rate * LATENCY_DURATION_S,
      // Items in turn, then random ones (refused: every item is held), as a crowd would.
      path: (i) => {
        expect.checkoutsSent++
        return i < STAMPEDE_ITEMS ? `/checkout?user_id=u${Math.floor(Math.random() * STAMPEDE_USERS)}&id=${i + 1}` : randomCheckout(STAMPEDE_USERS, STAMPEDE_ITEMS)
      },
      onResponse: (status, body) => {
        if (status !== 200) return countRefusal(refusals, status, body)
        bump(expect.acceptedBySale, saleOf(body))
        codes.push((JSON.parse(body) as { code: string }).code)
      }
    }, refusals)
    if (codes.length === 0) throw new Error('latency: no checkout was accepted, nothing to purchase')
    const purchaseRow = await fixedRate('purchase', {
      count: codes.length,
      path: (i) => `/purchase?code=${codes[i]}`,
      onResponse: (status, body) => {
        if (status === 200) bump(expect.soldBySale, saleOf(body))
        else countRefusal(purchaseRefusals, status, body)
      }
    }, purchaseRefusals)
    return { rows: [checkoutRow, purchaseRow], expect }
  } finally {
    await stop(service.child)
  }
}
