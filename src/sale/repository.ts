import type { Pool } from 'pg'
import type { AcceptedCheckout } from './inventory.js'
import { namedSaleKeys, saleKeys, saleTag, type CatalogItem, type Sale } from './sale.js'

// Every SQL statement of the sale, in one place (over 250 lines on purpose: one method per
// statement, each with the comment that says which promise its WHERE clause keeps).

/**
 * What names a sale in checkout_attempts and purchases: its id and its start, the partition key.
 * Queries filter on the start as a constant, so Postgres plans them against one partition.
 */
export type SaleKey = Pick<Sale, 'id' | 'startsAt'>

interface SaleRow { id: string, token: string, starts_at: Date, ends_at: Date, item_count: number, user_limit: number }

/** What Postgres, the system of record, says about one sale (the operator's `npm run sale:status`). */
export interface SaleReport {
  id: number
  startsAt: number
  endsAt: number
  items: number
  userLimit: number
  sold: number
  /** Accepted checkouts neither purchased nor expired at the report's instant. */
  held: number
  buyers: number
  revenueCents: number
  /** Checkout attempts of the sale by outcome (`accepted`, each refusal code, ...). */
  attempts: Record<string, number>
}

/** Sold, buyers, revenue and live holds of sale $1 starting at $2 (epoch ms), at instant $3. */
export const reportCountsSql =
  `SELECT p.sold, p.buyers, p.revenue_cents,
          (SELECT count(*)::int FROM checkout_attempts a
           WHERE a.sale_starts_at = to_timestamp($2::float8 / 1000) AND a.sale_id = $1 AND a.outcome = 'accepted'
             AND a.expires_at > to_timestamp($3::float8 / 1000)
             AND NOT EXISTS (SELECT 1 FROM purchases x WHERE x.sale_starts_at = to_timestamp($2::float8 / 1000) AND x.code = a.code)) AS held
   FROM (SELECT count(*)::int AS sold, count(DISTINCT user_id)::int AS buyers, coalesce(sum(price_cents), 0) AS revenue_cents
         FROM purchases WHERE sale_starts_at = to_timestamp($2::float8 / 1000) AND sale_id = $1) p`

/** Checkout attempts of sale $1 starting at $2 (epoch ms) by outcome. */
export const reportOutcomesSql =
  `SELECT outcome, count(*)::int AS n FROM checkout_attempts
   WHERE sale_starts_at = to_timestamp($2::float8 / 1000) AND sale_id = $1
   GROUP BY outcome ORDER BY n DESC, outcome`

/**
 * A sale Postgres will not let the service open: its hour is earlier than a sale that exists
 * (creating it would put ids out of the order of their hours), or a later sale has begun (it has
 * checkout attempts): that sale's hour is over for good. Only a clock that is behind asks for one.
 */
export class SaleOutOfOrder extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'SaleOutOfOrder'
  }
}

const iso = (date: Date | number): string => new Date(date).toISOString()

/**
 * Sales and their catalogs in Postgres, the system of record.
 * Preparing a sale is idempotent: any number of instances can prepare the same hour and
 * exactly one sale row and one catalog are written (UNIQUE(starts_at) backs the lock).
 */
export class SaleRepository {
  constructor (private readonly pool: Pool) {}

  /**
   * The sale that starts at `startsAt`, created with its catalog unless it exists. Creation runs
   * under a transaction-level advisory lock (one per schema), so instances preparing the same hour
   * concurrently write one row and one catalog, and the new id is max(id) + 1: ids count sales.
   * Sales are created in the order of their hours only, and a sale a later one has superseded is
   * never handed out again: either throws SaleOutOfOrder, whatever the caller's clock says.
   */
  async prepareSale (startsAt: number, endsAt: number, itemCount: number, userLimit: number): Promise<Sale> {
    const existing = await this.findSale(startsAt)
    if (existing !== null) {
      // Usually one later sale (the next hour's, prepared ahead), and none of its attempts yet.
      // Each is probed on its own start, a constant: one partition's (sale_id, outcome) index.
      const { rows: later } = await this.pool.query<{ id: string, starts_at: Date }>(
        'SELECT id, starts_at FROM sales WHERE starts_at > to_timestamp($1::float8 / 1000) ORDER BY starts_at', [startsAt])
      for (const sale of later) {
        const { rowCount } = await this.pool.query(
          'SELECT 1 FROM checkout_attempts WHERE sale_starts_at = to_timestamp($2::float8 / 1000) AND sale_id = $1 LIMIT 1',
          [sale.id, sale.starts_at.getTime()])
        if (rowCount === 0) continue
        throw new SaleOutOfOrder(`sale ${existing.id} of ${iso(startsAt)} is over: sale ${sale.id} of ${iso(sale.starts_at)} has begun`)
      }
      return existing
    }
    const client = await this.pool.connect()
    // The server may end this session between two statements (idle_in_transaction_session_timeout
    // after a stall): the next query fails instead of an unhandled 'error' event ending the process.
    const ignoreSessionEnd = () => {}
    client.on('error', ignoreSessionEnd)
    try {
      await client.query('BEGIN')
      await client.query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.sales'))")
      const inserted = await client.query<{ id: string }>(
        `INSERT INTO sales (id, starts_at, ends_at, item_count, user_limit)
         SELECT coalesce(max(id), 0) + 1, to_timestamp($1::float8 / 1000), to_timestamp($2::float8 / 1000), $3, $4 FROM sales
         HAVING NOT EXISTS (SELECT 1 FROM sales WHERE starts_at = to_timestamp($1::float8 / 1000))
            AND coalesce(max(starts_at) < to_timestamp($1::float8 / 1000), true)
         RETURNING id`,
        [startsAt, endsAt, itemCount, userLimit])
      const created = inserted.rows[0]
      if (created) {
        // Deterministic per sale: the same hour always gets the same names and prices.
        await client.query(
          `INSERT INTO items (sale_id, id, name, description, price_cents)
           SELECT $1, i,
                  'Item #' || i,
                  'Flash-sale item ' || i || ' of ' || $2::int || ', sale of ' || to_char(to_timestamp($3::float8 / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:00 "UTC"'),
                  100 + ('x' || substr(md5($3::text || ':' || i), 1, 8))::bit(32)::bigint % 99900
           FROM generate_series(1, $2::int) AS i`,
          [created.id, itemCount, startsAt])
      }
      await client.query('COMMIT')
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {})
      throw error
    } finally {
      client.off('error', ignoreSessionEnd)
      client.release()
    }
    const sale = await this.findSale(startsAt)
    if (sale !== null) return sale
    const { rows: [latest] } = await this.pool.query<{ id: string, starts_at: Date }>(
      'SELECT id, starts_at FROM sales WHERE starts_at > to_timestamp($1::float8 / 1000) ORDER BY starts_at DESC LIMIT 1', [startsAt])
    if (latest !== undefined) {
      throw new SaleOutOfOrder(`no sale is created for ${iso(startsAt)}: sale ${latest.id} of ${iso(latest.starts_at)}, a later hour, exists`)
    }
    throw new Error(`sale starting at ${iso(startsAt)} vanished after it was prepared`)
  }

  /** The sale that starts at `startsAt`, with its catalog, or null if it was never prepared. */
  async findSale (startsAt: number): Promise<Sale | null> {
    const { rows: [row] } = await this.pool.query<SaleRow>(
      'SELECT id, token, starts_at, ends_at, item_count, user_limit FROM sales WHERE starts_at = to_timestamp($1::float8 / 1000)',
      [startsAt])
    if (!row) return null
    const { rows: items } = await this.pool.query<{ id: number, name: string, description: string, price_cents: number }>(
      'SELECT id, name, description, price_cents FROM items WHERE sale_id = $1 ORDER BY id', [row.id])
    const catalog: (CatalogItem | undefined)[] = new Array(row.item_count + 1)
    for (const item of items) {
      catalog[item.id] = { id: item.id, name: item.name, description: item.description, priceCents: item.price_cents }
    }
    const id = Number(row.id)
    const tag = saleTag(id, row.token)
    return {
      id,
      startsAt: row.starts_at.getTime(),
      endsAt: row.ends_at.getTime(),
      itemCount: row.item_count,
      userLimit: row.user_limit,
      tag,
      key: namedSaleKeys(tag),
      keys: saleKeys(tag),
      catalog
    }
  }

  /**
   * Every accepted checkout of a sale, purchases first, then the newest first: what Redis is
   * rebuilt from (restore-codes.lua lets the first code of an item hold it). Redis never holds an
   * item twice, so of two live unsettled codes of one item the older was let go (its client got a
   * 503 and the row committed late, and the spool's replay has not rewritten it yet): the newer
   * one, whose client may hold a 200, wins. Voided codes and rewritten ones (no longer
   * `accepted`) are never replayed.
   */
  async acceptedCheckouts (sale: SaleKey): Promise<AcceptedCheckout[]> {
    const { rows } = await this.pool.query<{ code: string, purchased: boolean, item_id: number, expires_ms: string, user_id: string }>(
      `SELECT a.code, p.id IS NOT NULL AS purchased, a.item_id, (extract(epoch FROM a.expires_at) * 1000)::bigint AS expires_ms, a.user_id
       FROM checkout_attempts a
         LEFT JOIN purchases p ON p.sale_starts_at = to_timestamp($2::float8 / 1000) AND p.code = a.code
       WHERE a.sale_starts_at = to_timestamp($2::float8 / 1000) AND a.sale_id = $1
         AND a.outcome = 'accepted' AND a.settled IS DISTINCT FROM 'voided'
       ORDER BY purchased DESC, a.attempted_at DESC, a.id DESC`, [sale.id, sale.startsAt])
    return rows.map((r) => ({ code: r.code, purchased: r.purchased, itemId: r.item_id, expiresAt: Number(r.expires_ms), userId: r.user_id }))
  }

  /** Committed purchases of a sale. */
  async purchaseCount (sale: SaleKey): Promise<number> {
    const { rows: [row] } = await this.pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM purchases WHERE sale_starts_at = to_timestamp($2::float8 / 1000) AND sale_id = $1', [sale.id, sale.startsAt])
    return row?.n ?? 0
  }

  /** Items of a sale with a committed purchase. */
  async purchasedItems (sale: SaleKey): Promise<Set<number>> {
    const { rows } = await this.pool.query<{ item_id: number }>(
      'SELECT item_id FROM purchases WHERE sale_starts_at = to_timestamp($2::float8 / 1000) AND sale_id = $1', [sale.id, sale.startsAt])
    return new Set(rows.map((r) => r.item_id))
  }

  /** Accepted, still unsettled checkout codes of some items of a sale. */
  async unsettledCodesOfItems (sale: SaleKey, itemIds: number[]): Promise<string[]> {
    const { rows } = await this.pool.query<{ code: string }>(
      `SELECT code FROM checkout_attempts
       WHERE sale_starts_at = to_timestamp($3::float8 / 1000) AND sale_id = $1 AND outcome = 'accepted' AND settled IS NULL AND item_id = ANY($2::int[])`,
      [sale.id, itemIds, sale.startsAt])
    return rows.map((r) => r.code)
  }

  /**
   * Voids the codes that are not settled yet and returns them: their purchases can no longer be
   * recorded (the purchase writer's fence), so their items may be given back. A code whose
   * purchase is committing waits here for it, then is left alone.
   */
  async voidCodes (sale: SaleKey, codes: string[]): Promise<string[]> {
    const { rows } = await this.pool.query<{ code: string }>(
      `UPDATE checkout_attempts SET settled = 'voided'
       WHERE sale_starts_at = to_timestamp($2::float8 / 1000) AND code = ANY($1::text[]) AND settled IS NULL RETURNING code`,
      [codes, sale.startsAt])
    return rows.map((r) => r.code)
  }

  /**
   * Puts back redemptions whose purchase the service gave up on, through the same fence as
   * voidCodes: each code not settled yet either lists its redemption's token in `unredeemed`
   * (that purchase statement can then never commit, while a new redemption of the code can buy:
   * the code goes back to reserved) or, once its own expiry has passed by `now`, is voided. A code
   * whose purchase is committing waits here for it, then is left alone; a settled code is not
   * returned. Idempotent: a token is listed once.
   */
  async releaseRedemptions (sale: SaleKey, redemptions: Array<{ code: string, token: string }>, now: number): Promise<Array<{ code: string, voided: boolean }>> {
    if (redemptions.length === 0) return []
    const { rows } = await this.pool.query<{ code: string, settled: string | null }>(
      `UPDATE checkout_attempts SET settled = CASE WHEN expires_at <= to_timestamp($4::float8 / 1000) THEN 'voided' END,
         unredeemed = CASE WHEN expires_at <= to_timestamp($4::float8 / 1000) OR r.token = ANY (coalesce(unredeemed, '{}')) THEN unredeemed
                           ELSE array_append(unredeemed, r.token) END
       FROM unnest($1::text[], $2::text[]) AS r (released, token)
       WHERE sale_starts_at = to_timestamp($3::float8 / 1000) AND code = r.released AND settled IS NULL
       RETURNING code, settled`,
      [redemptions.map((r) => r.code), redemptions.map((r) => r.token), sale.startsAt, now])
    return rows.map((r) => ({ code: r.code, voided: r.settled === 'voided' }))
  }

  /**
   * How a code was settled: 'purchased', 'voided', or null while neither; the purchase it made,
   * once committed; whether the redemption `token` (if given) was put back (releaseRedemptions);
   * and whether Postgres recorded the code at all (an accepted checkout).
   */
  async settlementOf (sale: SaleKey, code: string, token: string | null = null): Promise<{ settled: string | null, purchase: { purchaseId: number, purchasedAt: number } | null, released: boolean, recorded: boolean }> {
    const { rows: [row] } = await this.pool.query<{ settled: string | null, purchase_id: string | null, purchased_at: Date | null, released: boolean | null }>(
      `SELECT a.settled, p.id AS purchase_id, p.purchased_at, $3::text = ANY (a.unredeemed) AS released
       FROM checkout_attempts a LEFT JOIN purchases p ON p.sale_starts_at = to_timestamp($2::float8 / 1000) AND p.code = a.code
       WHERE a.sale_starts_at = to_timestamp($2::float8 / 1000) AND a.code = $1`, [code, sale.startsAt, token])
    return {
      settled: row?.settled ?? null,
      purchase: row?.purchase_id == null || row.purchased_at === null ? null : { purchaseId: Number(row.purchase_id), purchasedAt: row.purchased_at.getTime() },
      released: row?.released === true,
      recorded: row !== undefined
    }
  }

  /**
   * The sale a checkout code was issued in, or null for a code never issued (or whose day is past
   * retention). Only for codes Redis does not know: it probes the code index of every partition.
   */
  async saleOfCode (code: string): Promise<number | null> {
    const { rows: [row] } = await this.pool.query<{ sale_id: string }>(
      'SELECT sale_id FROM checkout_attempts WHERE code = $1', [code])
    return row ? Number(row.sale_id) : null
  }

  /**
   * The `limit` latest sales (by opening time, newest first, a prepared one included), as of `now`.
   * The sales are looked up first so that each one's counts are queries on its start, a constant:
   * each touches the one partition holding the sale (test/load/partitions.test.ts checks the plans).
   */
  async report (now: number, limit: number): Promise<SaleReport[]> {
    const { rows } = await this.pool.query<SaleRow>(
      'SELECT id, token, starts_at, ends_at, item_count, user_limit FROM sales ORDER BY starts_at DESC LIMIT $1', [limit])
    return Promise.all(rows.map(async (row) => {
      const sale = [row.id, row.starts_at.getTime()]
      const [{ rows: [counts] }, { rows: outcomes }] = await Promise.all([
        this.pool.query<{ sold: number, held: number, buyers: number, revenue_cents: string }>(reportCountsSql, [...sale, now]),
        this.pool.query<{ outcome: string, n: number }>(reportOutcomesSql, sale)
      ])
      return {
        id: Number(row.id),
        startsAt: row.starts_at.getTime(),
        endsAt: row.ends_at.getTime(),
        items: row.item_count,
        userLimit: row.user_limit,
        sold: counts?.sold ?? 0,
        held: counts?.held ?? 0,
        buyers: counts?.buyers ?? 0,
        revenueCents: Number(counts?.revenue_cents ?? 0),
        attempts: Object.fromEntries(outcomes.map((o) => [o.outcome, o.n]))
      }
    }))
  }
}
