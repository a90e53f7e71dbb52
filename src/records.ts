import type { Pool } from 'pg'

/** One checkout attempt as persisted: refused and invalid attempts included. */
export interface CheckoutAttempt {
  saleId: number | null
  userId: string | null
  itemId: number | null
  outcome: string
  code: string | null
  expiresAt: number | null
  attemptedAt: number
}

export interface PurchaseRecord {
  saleId: number
  itemId: number
  userId: string
  code: string
  priceCents: number
  purchasedAt: number
}

/**
 * Multi-row INSERTs for the batch writers: one parameter per column (arrays through
 * unnest), so one plan serves every batch size and the 65,535-parameter cap never applies.
 * Times travel as epoch milliseconds (cheaper to serialize than ISO strings).
 */
export function checkoutAttemptWriter (pool: Pool) {
  return async (rows: CheckoutAttempt[]): Promise<void[]> => {
    await pool.query(
      `INSERT INTO checkout_attempts (sale_id, user_id, item_id, outcome, code, expires_at, attempted_at)
       SELECT sale_id, user_id, item_id, outcome, code, to_timestamp(expires_ms / 1000), to_timestamp(attempted_ms / 1000)
       FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $6::float8[], $7::float8[])
         AS r (sale_id, user_id, item_id, outcome, code, expires_ms, attempted_ms)`,
      [
        rows.map((r) => r.saleId),
        rows.map((r) => r.userId),
        rows.map((r) => r.itemId),
        rows.map((r) => r.outcome),
        rows.map((r) => r.code),
        rows.map((r) => r.expiresAt),
        rows.map((r) => r.attemptedAt)
      ])
    return new Array<void>(rows.length)
  }
}

/**
 * Inserts purchases and resolves each with its purchase id, or with null for a row the
 * settlement fence refused: its code was voided first (given back after its purchase was taken
 * for abandoned), or its item already has a purchase. A refused row fails alone, never its batch.
 */
export function purchaseWriter (pool: Pool) {
  return async (rows: PurchaseRecord[]): Promise<Array<number | null>> => {
    const { rows: inserted } = await pool.query<{ id: string, code: string }>(
      `WITH batch AS (
         SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::int[], $6::float8[])
           AS r (sale_id, item_id, user_id, code, price_cents, purchased_ms)
       ), settled AS (
         UPDATE checkout_attempts a SET settled = 'purchased'
         FROM batch b
         WHERE a.code = b.code AND a.settled IS NULL
           AND NOT EXISTS (SELECT 1 FROM purchases p WHERE p.sale_id = b.sale_id AND p.item_id = b.item_id)
         RETURNING a.code
       )
       INSERT INTO purchases (sale_id, item_id, user_id, code, price_cents, purchased_at)
       SELECT b.sale_id, b.item_id, b.user_id, b.code, b.price_cents, to_timestamp(b.purchased_ms / 1000)
       FROM batch b JOIN settled s ON s.code = b.code
       RETURNING id, code`,
      [
        rows.map((r) => r.saleId),
        rows.map((r) => r.itemId),
        rows.map((r) => r.userId),
        rows.map((r) => r.code),
        rows.map((r) => r.priceCents),
        rows.map((r) => r.purchasedAt)
      ])
    const idByCode = new Map(inserted.map((r) => [r.code, Number(r.id)]))
    return rows.map((r) => idByCode.get(r.code) ?? null)
  }
}
