/**
 * The sale service's facade: what routes and plugins call. It builds the service's parts and
 * hands each call to the part that holds it; the rules live in the parts:
 * - calendar.ts: which sale is open, preparing it, restoring Redis's state from Postgres
 * - checkout.ts: checkouts and their attempt rows (writer, spool)
 * - purchase.ts: purchases and the settlement of those whose write failed
 * - repair.ts: undoing abandoned Redis decisions, unrecorded purchases and expired holds
 */
import { SaleCalendar, type SaleSummary } from './calendar.js'
import { Checkout, type Reservation } from './checkout.js'
import type { SaleRules, SaleServiceDeps } from './deps.js'
import { Purchases, type Purchase } from './purchase.js'
import type { CheckoutAttempt } from './record-writers.js'
import { AbandonedDecisions, Repair } from './repair.js'
import type { Sale } from './sale.js'

export type { Purchase, Reservation, SaleRules, SaleServiceDeps, SaleSummary }

/**
 * The business rules of the hourly sale, free of HTTP. Redis decides (one Lua script per
 * decision), Postgres records; a call returns only after its record is committed.
 */
export class SaleService {
  readonly #deps: SaleServiceDeps
  readonly #calendar: SaleCalendar
  readonly #abandoned: AbandonedDecisions
  readonly #checkout: Checkout
  readonly #purchases: Purchases
  readonly #repair: Repair

  constructor (deps: SaleServiceDeps) {
    this.#deps = deps
    this.#calendar = new SaleCalendar(deps)
    this.#abandoned = new AbandonedDecisions(deps, this.#calendar)
    this.#checkout = new Checkout(deps, this.#calendar, this.#abandoned)
    this.#purchases = new Purchases(deps, this.#calendar, this.#abandoned)
    this.#repair = new Repair(deps, this.#calendar, this.#purchases)
  }

  now (): number {
    return this.#deps.now()
  }

  /** See SaleCalendar.prepareSale: creates and seeds the sale starting at `startsAt`, idempotently. */
  prepareSale (startsAt: number): Promise<Sale> {
    return this.#calendar.prepareSale(startsAt)
  }

  /** The current hour's sale, and the next hour's within SALE_PREPARE_SECONDS of its opening. */
  prepareAhead (now = this.now()): Promise<void> {
    return this.#calendar.prepareAhead(now)
  }

  /** The next hour's sale once this instance has prepared it (SALE_PREPARE_SECONDS before it opens), else null. */
  preparedNextSale (now = this.now()): Sale | null {
    return this.#calendar.preparedNextSale(now)
  }

  /** Makes sure Redis holds the sale's state, rebuilding it from Postgres if Redis lost it. */
  restoreHotState (sale: Sale): Promise<void> {
    return this.#calendar.restoreHotState(sale)
  }

  /** Called when Redis reconnects: whatever it lost of the prepared sales comes back now. */
  restorePreparedSales (): Promise<void> {
    return this.#calendar.restorePreparedSales()
  }

  /** The sale open at `now`: from memory, else prepared by the first request of the hour. */
  currentSale (now: number): Promise<Sale> {
    return this.#calendar.currentSale(now)
  }

  /** Sold / held / left of the sale open at `now` (the caller's reading of the clock, so what it shows next to it agrees). */
  summary (now = this.now()): Promise<SaleSummary> {
    return this.#calendar.summary(now)
  }

  checkout (userId: string, itemId: number): Promise<Reservation> {
    return this.#checkout.checkout(userId, itemId)
  }

  /**
   * Records a checkout request that failed validation (or was refused before it got to the sale,
   * e.g. by the drain: `service_unavailable`), then lets the caller refuse it.
   */
  recordRefusedCheckout (userId: string | null, itemId: number | null, outcome: 'invalid_request' | 'service_unavailable' = 'invalid_request'): Promise<void> {
    return this.#checkout.recordRefused(userId, itemId, outcome)
  }

  /** Writes the attempts the spool kept as `service_unavailable` rows and cancels their holds; idempotent. */
  settleSpooled (attempts: CheckoutAttempt[]): Promise<void> {
    return this.#checkout.settleSpooled(attempts)
  }

  purchase (code: string): Promise<Purchase> {
    return this.#purchases.purchase(code)
  }

  /** Settles the redemptions this instance gave up on while Postgres could not be asked; run often. */
  settleUnresolved (): Promise<number> {
    return this.#purchases.settleUnresolved()
  }

  /** Puts back items Redis counts as sold that Postgres never recorded (after `settleMs`); run periodically. */
  reconcilePurchases (settleMs: number): Promise<number> {
    return this.#repair.reconcilePurchases(settleMs)
  }

  /** Returns expired reservations of the current sale to stock; run periodically. */
  releaseExpired (): Promise<number> {
    return this.#repair.releaseExpired()
  }

  /** Sends again the undos of Redis decisions given up on that Redis has not answered; returns how many are left. */
  settleAbandoned (): Promise<number> {
    return this.#abandoned.settle()
  }
}
