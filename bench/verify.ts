/**
 * The invariants, from Postgres, after a service flushed and exited, checked sale by sale: no item
 * sold twice, no sale over its items, no user over the limit, every acknowledged checkout and
 * purchase committed, every checkout request the service read recorded.
 *
 * Two counts meet here. What Postgres holds: purchases committed, checkouts accepted (attempt rows
 * with outcome `accepted`). What the load generator saw: "acknowledged", an answer 200 it read
 * before the run stopped. Every acknowledged one must be committed; a committed one may lack its
 * acknowledgement (its answer was still on the wire when the load generator stopped reading).
 */
import pg from 'pg'
import { base, type Service } from './launch.js'
import { fmt } from './stats.js'

/** What the bench expects of one service's records in Postgres, sale by sale. */
export interface Expectation {
  service: Service
  /** Checkout requests sent, and connections (each may have one unread when the run stopped). */
  checkoutsSent: number
  connections: number
  /** Checkouts answered 200 and read, by sale: each has its accepted attempt row. */
  acceptedBySale: Map<number, number>
  /** Purchases answered 200 and read, by sale: each has its purchase row. */
  soldBySale: Map<number, number>
  /** The scenario runs until one sale is sold out; which one it was. */
  sellsOut: boolean
  soldOutSale?: number
  /** No code may be held twice at once: the run is shorter than the checkout TTL. */
  holdsOutliveRun: boolean
}

/** Only the sell-out runs with a checkout TTL shorter than itself (and runs until it sells out). */
export const expectation = (service: Service, connections: number, sellsOut: boolean): Expectation =>
  ({ service, checkoutsSent: 0, connections, acceptedBySale: new Map(), soldBySale: new Map(), sellsOut, holdsOutliveRun: !sellsOut })

export const ACKNOWLEDGED = 'acknowledged = answered 200 and read by the load generator before it stopped; ' +
  'committed / accepted = rows in Postgres. Each acknowledged one must be committed; the reverse need not hold.'

interface SaleCounts { id: number, starts_at: Date, item_count: number, sold: number, items_sold: number, held_twice: number, accepted: number, attempts: number, users_over: number }

/** Checks one service's schema, prints what it counted, drops the schema; returns the broken invariants. */
export async function verify ({ service: { schema }, checkoutsSent, connections, acceptedBySale, soldBySale, sellsOut, soldOutSale, holdsOutliveRun }: Expectation): Promise<string[]> {
  const client = new pg.Client({ connectionString: base.DATABASE_URL })
  await client.connect()
  const failures: string[] = []
  try {
    const { rows: sales } = await client.query<SaleCounts>(`
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
      console.log(`    sale #${s.id}: ${fmt(s.sold)} purchases committed (${fmt(acked)} acknowledged), ` +
        `${fmt(s.accepted)} checkouts accepted (${fmt(accepted)} acknowledged), ${fmt(s.attempts)} attempt rows`)
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
    console.log(`    ${fmt(attempts)} attempt rows in all for ${fmt(checkoutsSent)} checkout requests sent ` +
      `(up to ${fmt(connections)} fewer is allowed: one request per connection may be unread when the run stopped)`)
    await client.query(`DROP SCHEMA ${schema} CASCADE`)
  } finally {
    await client.end()
  }
  return failures
}
