import type { Pool } from 'pg'
import type { AcceptedCheckout } from './inventory.js'
import { saleKeys, type CatalogItem, type Sale } from './sale.js'

interface SaleRow { id: string, starts_at: Date, ends_at: Date, item_count: number, user_limit: number }

/**
 * Sales and their catalogs in Postgres, the system of record.
 * Opening a sale is idempotent: UNIQUE(starts_at) plus ON CONFLICT DO NOTHING means any
 * number of instances can roll the same hour and exactly one catalog is written.
 */
export class SaleRepository {
  constructor (private readonly pool: Pool) {}

  /** Creates the sale that starts at `startsAt` (with its catalog) unless it exists; returns it. */
  async openSale (startsAt: number, endsAt: number, itemCount: number, userLimit: number): Promise<Sale> {
    const client = await this.pool.connect()
    try {
      await client.query('BEGIN')
      const inserted = await client.query<{ id: string }>(
        `INSERT INTO sales (starts_at, ends_at, item_count, user_limit)
         VALUES (to_timestamp($1::float8 / 1000), to_timestamp($2::float8 / 1000), $3, $4)
         ON CONFLICT (starts_at) DO NOTHING RETURNING id`,
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
      client.release()
    }
    const sale = await this.findSale(startsAt)
    if (!sale) throw new Error(`sale starting at ${new Date(startsAt).toISOString()} vanished after opening`)
    return sale
  }

  /** The sale that starts at `startsAt`, with its catalog, or null if it was never opened. */
  async findSale (startsAt: number): Promise<Sale | null> {
    const { rows: [row] } = await this.pool.query<SaleRow>(
      'SELECT id, starts_at, ends_at, item_count, user_limit FROM sales WHERE starts_at = to_timestamp($1::float8 / 1000)',
      [startsAt])
    if (!row) return null
    const { rows: items } = await this.pool.query<{ id: number, name: string, description: string, price_cents: number }>(
      'SELECT id, name, description, price_cents FROM items WHERE sale_id = $1 ORDER BY id', [row.id])
    const catalog: (CatalogItem | undefined)[] = new Array(row.item_count + 1)
    for (const item of items) {
      catalog[item.id] = { id: item.id, name: item.name, description: item.description, priceCents: item.price_cents }
    }
    const id = Number(row.id)
    return {
      id,
      startsAt: row.starts_at.getTime(),
      endsAt: row.ends_at.getTime(),
      itemCount: row.item_count,
      userLimit: row.user_limit,
      keys: saleKeys(id),
      catalog
    }
  }

  /** Every accepted checkout of a sale, purchases first: what Redis is rebuilt from. */
  async acceptedCheckouts (saleId: number): Promise<AcceptedCheckout[]> {
    const { rows } = await this.pool.query<{ code: string, purchased: boolean, item_id: number, expires_ms: string, user_id: string }>(
      `SELECT a.code, p.id IS NOT NULL AS purchased, a.item_id, (extract(epoch FROM a.expires_at) * 1000)::bigint AS expires_ms, a.user_id
       FROM checkout_attempts a LEFT JOIN purchases p ON p.code = a.code
       WHERE a.sale_id = $1 AND a.outcome = 'accepted'
       ORDER BY purchased DESC, a.id`, [saleId])
    return rows.map((r) => ({ code: r.code, purchased: r.purchased, itemId: r.item_id, expiresAt: Number(r.expires_ms), userId: r.user_id }))
  }

  /** The sale a checkout code was issued in, or null for a code never issued. */
  async saleOfCode (code: string): Promise<number | null> {
    const { rows: [row] } = await this.pool.query<{ sale_id: string }>(
      'SELECT sale_id FROM checkout_attempts WHERE code = $1', [code])
    return row ? Number(row.sale_id) : null
  }
}
