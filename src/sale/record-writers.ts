import type { Pool } from 'pg'
import type { RefusalCode } from './errors.js'

/** Every outcome a checkout attempt row can have. */
export const CHECKOUT_OUTCOMES = ['accepted', 'no_active_sale', 'unknown_item', 'sold_out', 'item_sold', 'item_reserved',
  'already_reserved_by_you', 'user_limit_reached', 'invalid_request', 'service_unavailable'] as const satisfies ReadonlyArray<'accepted' | 'invalid_request' | 'service_unavailable' | RefusalCode>

/** One checkout attempt as persisted: refused and invalid attempts included. */
export interface CheckoutAttempt {
  /** Decided by the service (src/lib/attempt-id.ts): writing the same attempt twice keeps one row. */
  attemptId: string
  saleId: number | null
  /** The sale's start, the partition key (null with no sale: then the attempt's own time is its key). */
  saleStartsAt: number | null
  userId: string | null
  itemId: number | null
  outcome: string
  code: string | null
  expiresAt: number | null
  attemptedAt: number
}

export interface PurchaseRecord {
  saleId: number
  /** The sale's start: the partition key, so the fence looks the code up in one partition. */
  saleStartsAt: number
  itemId: number
  userId: string
  code: string
  priceCents: number
  purchasedAt: number
  /**
   * The random token of the redemption this purchase completes (Redis holds it with the redeemed
   * code): a fence that lists it (checkout_attempts.unredeemed) keeps this statement from committing.
   */
  redemption: string
}

export interface StatementOptions {
  /**
   * Sends the statement as a named prepared statement: parsed and planned once per connection, not
   * per batch (at stampede rates that was a fifth of Postgres's CPU per attempt row). Only with
   * connections of the service's own: a transaction-mode pooler (PgBouncer before 1.21) may run the
   * next batch on a server session that never saw the PREPARE.
   */
  prepared: boolean
}

/**
 * Multi-row INSERTs for the batch writers: one parameter per column (arrays through
 * unnest), so one plan serves every batch size and the 65,535-parameter cap never applies.
 * Times travel as epoch milliseconds (cheaper to serialize than ISO strings).
 * An attempt's partition key is its sale's start, which the service already holds, or its own
 * time when it has no sale (migrations/1764600000000_partitioned-records.sql): the same attempt
 * always gets the same key, and a per-statement check (migrations/1764800000000_attempt-sale-check.sql)
 * refuses a pair that is not a sale's (id, starts_at).
 */
export function writeAttempts (pool: Pool, { prepared }: StatementOptions) {
  return async (rows: CheckoutAttempt[]): Promise<void[]> => {
    // No ON CONFLICT (it costs on every row): the one conflict possible is a batch the service gave
    // up on reaching Postgres after the spool's replay of its rows; it then fails as a whole, and
    // every row of it is in the spool (all were answered 503), so the replayed rows stand.
    await pool.query({
      ...(prepared ? { name: 'insert-checkout-attempts' } : {}),
      text: `INSERT INTO checkout_attempts (attempt_id, sale_id, sale_starts_at, user_id, item_id, outcome, code, expires_at, attempted_at)
       SELECT attempt_id, sale_id, to_timestamp(coalesce(sale_starts_ms, attempted_ms) / 1000), user_id, item_id, outcome, code,
              to_timestamp(expires_ms / 1000), to_timestamp(attempted_ms / 1000)
       FROM unnest($1::uuid[], $2::bigint[], $3::float8[], $4::text[], $5::int[], $6::text[], $7::text[], $8::float8[], $9::float8[])
         AS r (attempt_id, sale_id, sale_starts_ms, user_id, item_id, outcome, code, expires_ms, attempted_ms)`,
      values: [
        rows.map((r) => r.attemptId),
        rows.map((r) => r.saleId),
        rows.map((r) => r.saleStartsAt),
        rows.map((r) => r.userId),
        rows.map((r) => r.itemId),
        rows.map((r) => r.outcome),
        rows.map((r) => r.code),
        rows.map((r) => r.expiresAt),
        rows.map((r) => r.attemptedAt)
      ]
    })
    return new Array<void>(rows.length)
  }
}

/**
 * Writes attempts that were answered 503 because their row could not be written (or may not have
 * been: a batch lost to a timeout or a dropped connection), from the spool: each becomes a
 * `service_unavailable` row at its original time. If the original row did commit after all
 * (late, behind the client's back), it is turned into that row: an accepted one loses its code,
 * so the rebuild of Redis never replays it and no purchase can ever use it (a code nobody was
 * given is never purchased, and a purchase would have settled it first: `settled IS NULL`).
 * Idempotent: replaying the same attempts again changes nothing.
 */
export function writeUnavailableAttempts (pool: Pool) {
  return async (rows: CheckoutAttempt[]): Promise<void[]> => {
    await pool.query(
      `INSERT INTO checkout_attempts AS a (attempt_id, sale_id, sale_starts_at, user_id, item_id, outcome, attempted_at)
       SELECT attempt_id, sale_id, to_timestamp(coalesce(sale_starts_ms, attempted_ms) / 1000), user_id, item_id,
              'service_unavailable', to_timestamp(attempted_ms / 1000)
       FROM unnest($1::uuid[], $2::bigint[], $3::float8[], $4::text[], $5::int[], $6::float8[])
         AS r (attempt_id, sale_id, sale_starts_ms, user_id, item_id, attempted_ms)
       ON CONFLICT (attempt_id, sale_starts_at) DO UPDATE SET outcome = 'service_unavailable', code = NULL, expires_at = NULL
       WHERE a.settled IS NULL AND a.outcome <> 'service_unavailable'`,
      [
        rows.map((r) => r.attemptId),
        rows.map((r) => r.saleId),
        rows.map((r) => r.saleStartsAt),
        rows.map((r) => r.userId),
        rows.map((r) => r.itemId),
        rows.map((r) => r.attemptedAt)
      ])
    return new Array<void>(rows.length)
  }
}

/**
 * Inserts purchases and resolves each with its purchase id, or with null for a row the
 * settlement fence refused: its code was voided first (given back after its purchase was taken
 * for abandoned), its redemption was put back (its token listed in `unredeemed`: the code went
 * back to reserved), or its item already has a purchase. A refused row fails alone, never its batch.
 * The batch's sale starts ($8, one or two values: a batch may straddle XX:00) are constants of
 * the statement, so Postgres prunes to their partitions when it plans it.
 */
export function writePurchases (pool: Pool) {
  return async (rows: PurchaseRecord[]): Promise<Array<number | null>> => {
    const { rows: inserted } = await pool.query<{ id: string, code: string }>(
      `WITH batch AS (
         SELECT r.*, to_timestamp(r.sale_starts_ms / 1000) AS sale_starts_at
         FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::int[], $6::float8[], $7::float8[], $9::text[])
           AS r (sale_id, item_id, user_id, code, price_cents, purchased_ms, sale_starts_ms, redemption)
       ), settled AS (
         UPDATE checkout_attempts a SET settled = 'purchased'
         FROM batch b
         WHERE a.sale_starts_at = ANY($8::timestamptz[]) AND a.sale_starts_at = b.sale_starts_at
           AND a.code = b.code AND a.settled IS NULL
           AND (a.unredeemed IS NULL OR b.redemption <> ALL (a.unredeemed))
           AND NOT EXISTS (SELECT 1 FROM purchases p
                           WHERE p.sale_starts_at = ANY($8::timestamptz[]) AND p.sale_starts_at = b.sale_starts_at
                             AND p.sale_id = b.sale_id AND p.item_id = b.item_id)
         RETURNING a.code
       )
       INSERT INTO purchases (sale_id, sale_starts_at, item_id, user_id, code, price_cents, purchased_at)
       SELECT b.sale_id, b.sale_starts_at, b.item_id, b.user_id, b.code, b.price_cents, to_timestamp(b.purchased_ms / 1000)
       FROM batch b JOIN settled s ON s.code = b.code
       RETURNING id, code`,
      [
        rows.map((r) => r.saleId),
        rows.map((r) => r.itemId),
        rows.map((r) => r.userId),
        rows.map((r) => r.code),
        rows.map((r) => r.priceCents),
        rows.map((r) => r.purchasedAt),
        rows.map((r) => r.saleStartsAt),
        [...new Set(rows.map((r) => r.saleStartsAt))].map((ms) => new Date(ms).toISOString()),
        rows.map((r) => r.redemption)
      ])
    const idByCode = new Map(inserted.map((r) => [r.code, Number(r.id)]))
    return rows.map((r) => idByCode.get(r.code) ?? null)
  }
}
