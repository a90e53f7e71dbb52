/**
 * `flash-sale status [--json] [--sales N]`: the latest sales as Postgres, the system of record,
 * holds them (sold, live holds, left, buyers, revenue, checkout attempts by outcome). Reads only.
 * `--json` prints one JSON document and nothing else on stdout, in the API's conventions
 * (snake_case, ISO-8601 UTC times, prices in currency units).
 */
import type { SaleReport } from '../sale/repository.js'
import { isoTime, toPrice } from '../http/presenters.js'

/** Where a sale stands at `now`: prepared ahead and not open yet, selling, or over. */
const stateOf = (sale: SaleReport, now: number): 'upcoming' | 'open' | 'closed' =>
  now < sale.startsAt ? 'upcoming' : now < sale.endsAt ? 'open' : 'closed'

const total = (attempts: Record<string, number>): number => Object.values(attempts).reduce((a, b) => a + b, 0)

/** Checkout codes of the sale that never bought: expired, voided, or alive when the sale ended (they die with it). */
const unredeemed = (sale: SaleReport): number => (sale.attempts.accepted ?? 0) - sale.sold - sale.held

/** The machine-readable report (`--json`). */
export function statusDocument (sales: SaleReport[], now: number) {
  return {
    generated_at: isoTime(now),
    sales: sales.map((sale) => ({
      id: sale.id,
      state: stateOf(sale, now),
      opens_at: isoTime(sale.startsAt),
      closes_at: isoTime(sale.endsAt),
      items: sale.items,
      sold: sale.sold,
      held: sale.held,
      left: sale.items - sale.sold - sale.held,
      unredeemed_codes: unredeemed(sale),
      buyers: sale.buyers,
      user_limit: sale.userLimit,
      revenue: toPrice(sale.revenueCents),
      checkout_attempts: { total: total(sale.attempts), by_outcome: sale.attempts }
    }))
  }
}

const count = (n: number) => n.toLocaleString('en-US')
const utc = (ms: number) => new Date(ms).toISOString().replace('T', ' ').slice(0, 16) + ' UTC'

function describeSale (sale: SaleReport, now: number): string {
  const state = stateOf(sale, now)
  const when = state === 'open'
    ? `open, ${Math.ceil((sale.endsAt - now) / 60_000)} min left`
    : state === 'upcoming' ? `opens in ${Math.ceil((sale.startsAt - now) / 60_000)} min` : 'closed'
  return [
    `sale ${sale.id}: ${utc(sale.startsAt)} to ${utc(sale.endsAt)} (${when})`,
    state === 'closed'
      // A sale's unsold items and unredeemed holds end with it: nothing carries over to the next hour.
      ? `items ${count(sale.items)}   sold ${count(sale.sold)}   unsold ${count(sale.items - sale.sold)}   codes never redeemed ${count(unredeemed(sale))} (ended with the sale)`
      : `items ${count(sale.items)}   sold ${count(sale.sold)}   held ${count(sale.held)}   left ${count(sale.items - sale.sold - sale.held)}`,
    `buyers ${count(sale.buyers)} (limit ${sale.userLimit} each)   revenue ${(sale.revenueCents / 100).toFixed(2)}`,
    `checkout attempts ${count(total(sale.attempts))}: ` +
      (Object.entries(sale.attempts).map(([outcome, n]) => `${outcome} ${count(n)}`).join(', ') || 'none')
  ].join('\n')
}

/** The human report: each sale as a short paragraph, newest first. */
export function statusText (sales: SaleReport[], now: number): string {
  return sales.length === 0 ? 'no sale has been prepared yet' : sales.map((sale) => describeSale(sale, now)).join('\n\n')
}
