/**
 * What the sale service is built from: the sale's rules (from the config) and its dependencies.
 * Each part of the service (calendar, checkout, purchase, repair) receives them whole.
 */
import type { BatchWriter } from '../db/batch-writer.js'
import type { CheckoutRateLimit, Inventory } from './inventory.js'
import type { CheckoutAttempt, PurchaseRecord } from './record-writers.js'
import type { SaleRepository } from './repository.js'

export interface SaleRules {
  itemCount: number
  userLimit: number
  checkoutTtlMs: number
  /** How long before its opening the next hour's sale is prepared. */
  prepareAheadMs: number
  /** The per-user abuse limit on checkout tries. */
  checkoutRateLimit: CheckoutRateLimit
}

interface Logger {
  error (obj: unknown, msg?: string): void
  warn (obj: unknown, msg?: string): void
  info (obj: unknown, msg?: string): void
  debug (obj: unknown, msg?: string): void
}

export interface SaleServiceDeps {
  rules: SaleRules
  now: () => number
  repository: SaleRepository
  inventory: Inventory
  attemptWriter: BatchWriter<CheckoutAttempt>
  /** Where an attempt goes whose row the writer failed to (or may not) commit: on disk, fsynced. */
  spool: { append (attempt: CheckoutAttempt): Promise<void> }
  /** Writes spooled attempts as `service_unavailable` rows (record-writers.ts writeUnavailableAttempts). */
  writeUnavailable: (attempts: CheckoutAttempt[]) => Promise<unknown>
  purchaseWriter: BatchWriter<PurchaseRecord, number | null>
  /** Throws a 503 at once while Redis is known down (src/redis/readiness.ts). */
  redisReadiness: { assertUp (): void }
  /** Throws a 503 `clock_skew` while the clocks disagree (src/redis/clock.ts): no sale is opened, created or sold in then. */
  clockCheck: { assertSound (): void }
  log: Logger
}
