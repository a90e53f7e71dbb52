/**
 * Undoing what Redis holds that Postgres says it should not: Redis decisions the service gave up
 * on (answered 503) that may have run (AbandonedDecisions, fed by checkout and purchase), items
 * Redis counts as sold without a purchase row (reconcilePurchases), and expired holds
 * (releaseExpired). The service runs these on timers (plugins/jobs.ts).
 */
import type { SaleCalendar } from './calendar.js'
import type { SaleServiceDeps } from './deps.js'
import { mayHaveRun } from './inventory.js'
import type { Purchases } from './purchase.js'
import type { Sale } from './sale.js'

/**
 * Decisions given up on (see AbandonedDecisions.abandon) that one instance keeps undoing until
 * Redis answers: past this many, new ones are only logged (their holds still expire; a redemption
 * is then left to the purchase reconciler).
 */
const MAX_ABANDONED = 100_000
/** Abandoned decisions undone per settle call: a backlog after a long stall goes back in bounded bursts. */
const SETTLE_ABANDONED_BATCH = 500

/** A Redis decision whose answer the service gave up on (it answered 503), and how to undo it. */
export type Abandoned =
  /** A checkout's hold (undo: cancel it); one that expired is released by the sweep anyway (sale clock, ms). */
  | { kind: 'hold', sale: Sale, code: string, expiresAt: number }
  /** A purchase's redemption (undo: back to reserved), by its token: only that redemption is undone. */
  | { kind: 'redemption', sale: Sale, code: string, token: string }

const abandonedKey = (d: Abandoned): string => `${d.kind}:${d.code}:${d.kind === 'redemption' ? d.token : ''}`

/** The Redis decisions this instance gave up on that may have run, until undone. */
export class AbandonedDecisions {
  readonly #deps: SaleServiceDeps
  readonly #calendar: SaleCalendar
  readonly #abandoned = new Map<string, Abandoned>()
  /** Abandoned decisions past MAX_ABANDONED since settle last logged them. */
  #dropped = 0

  constructor (deps: SaleServiceDeps, calendar: SaleCalendar) {
    this.#deps = deps
    this.#calendar = calendar
  }

  /**
   * A decision whose answer never came (a command timeout, a connection lost while it was in
   * flight): the client gets a 503, so whatever the decision did must be undone. Redis reads past
   * its deadline do nothing (Inventory), but one read just before its deadline whose answer came
   * late did run. Its undo is sent now: after the decision in any case (sent after the client gave
   * up, and on the same connection right behind it), so it undoes that decision or finds nothing
   * to undo, and never anything else (a hold by its own code, a redemption by its token). Until
   * Redis answers it, settle sends it again. Rethrows `error`.
   */
  abandon (error: unknown, decision: Abandoned): never {
    if (mayHaveRun(error)) {
      if (this.#abandoned.size < MAX_ABANDONED) {
        this.#abandoned.set(abandonedKey(decision), decision)
        this.#undo(decision).catch(() => {})
      } else {
        this.#dropped++
      }
    }
    throw error
  }

  /** Undoes one abandoned decision; forgets it once Redis answered. */
  async #undo (decision: Abandoned): Promise<void> {
    const { inventory } = this.#deps
    if (decision.kind === 'hold') await inventory.cancelReservation(decision.sale, decision.code)
    else await inventory.undoRedeem(decision.sale, decision.code, decision.token)
    this.#abandoned.delete(abandonedKey(decision))
  }

  /**
   * Sends again the undos of decisions given up on (abandon) that Redis has not answered yet
   * (it was stalled or away); run periodically. Cheap when there are none. Returns how many are
   * left. A hold past its expiry, or of a sale this instance no longer serves, is dropped: the
   * sweep releases the one, and the other is over.
   */
  async settle (): Promise<number> {
    if (this.#dropped > 0) {
      this.#deps.log.error({ dropped: this.#dropped, max: MAX_ABANDONED }, 'too many abandoned Redis decisions: some are not undone (their holds expire; their redemptions are left to the purchase reconciler)')
      this.#dropped = 0
    }
    if (this.#abandoned.size === 0) return 0
    // While Redis is known down each undo would only wait out its timeout.
    this.#deps.redisReadiness.assertUp()
    const now = this.#deps.now()
    const serving = new Set([...this.#calendar.preparedSales()].map((sale) => sale.id))
    for (const [key, decision] of this.#abandoned) {
      if (!serving.has(decision.sale.id) || (decision.kind === 'hold' && decision.expiresAt <= now)) this.#abandoned.delete(key)
    }
    const batch = [...this.#abandoned.values()].slice(0, SETTLE_ABANDONED_BATCH)
    await Promise.all(batch.map((decision) => this.#undo(decision).catch(() => {})))
    return this.#abandoned.size
  }
}

/** Puts back the items of purchases nobody recorded, and the holds that expired. */
export class Repair {
  readonly #deps: SaleServiceDeps
  readonly #calendar: SaleCalendar
  readonly #purchases: Pick<Purchases, 'busyWith'>
  /** Items of sale `#unrecordedSaleId` that Redis counts as sold without a purchase row -> first seen (wall clock). */
  #unrecorded = new Map<number, number>()
  #unrecordedSaleId: number | null = null

  constructor (deps: SaleServiceDeps, calendar: SaleCalendar, purchases: Pick<Purchases, 'busyWith'>) {
    this.#deps = deps
    this.#calendar = calendar
    this.#purchases = purchases
  }

  /**
   * Puts back items that Redis counts as sold but Postgres never recorded: an instance that
   * redeemed a code and died (SIGKILL, OOM, power loss) before its purchase batch committed, or
   * could not settle a purchase it gave up on, leaves such an item, and nobody else would ever undo
   * it, so the sale could never sell out exactly. An item is a suspect once it stayed unrecorded for
   * `settleMs`; its code's redemption is then released through Postgres's fence, which waits for a
   * purchase of it that is committing and then leaves it alone: the code goes back to reserved (its
   * buyer's retry buys), or, once the code's own expiry has passed, is voided and its item goes back
   * on sale. Only what this call released is put back in Redis. So a slow commit, on this instance
   * or another, is never undone; `settleMs` only decides how soon an abandoned purchase is put back.
   * Run periodically; returns the items put back.
   */
  async reconcilePurchases (settleMs: number): Promise<number> {
    const { inventory, repository, log } = this.#deps
    const sale = this.#calendar.preparedAt(this.#deps.now())
    if (sale === null) {
      this.#unrecorded.clear()
      return 0
    }
    if (this.#unrecordedSaleId !== sale.id) {
      this.#unrecorded.clear()
      this.#unrecordedSaleId = sale.id
    }
    // Redis first, then Postgres: a purchase committed before the Redis read is seen as recorded.
    // Cheap check first: while the counts agree there is nothing to look for item by item.
    if ((await inventory.counts(sale)).sold === await repository.purchaseCount(sale)) {
      this.#unrecorded.clear()
      return 0
    }
    const sold = await inventory.soldItems(sale)
    const recorded = await repository.purchasedItems(sale)
    // Wall-clock time, not the sale clock: how long an item has stayed unrecorded.
    const wallNow = Date.now()
    const unrecorded = new Map<number, number>()
    const suspects: number[] = []
    for (const item of sold) {
      if (recorded.has(item)) continue
      const since = this.#unrecorded.get(item) ?? wallNow
      unrecorded.set(item, since)
      if (wallNow - since >= settleMs) suspects.push(item)
    }
    this.#unrecorded = unrecorded
    if (suspects.length === 0) return 0
    // The suspects' redeemed codes (an item's earlier, expired codes stay as they are), minus
    // those this instance is buying right now.
    const unsettled = await repository.unsettledCodesOfItems(sale, suspects)
    const candidates = (await inventory.redemptions(sale, unsettled))
      .filter(({ code }) => !this.#purchases.busyWith(code))
    if (candidates.length === 0) return 0
    const tokens = new Map<string, string>()
    const untokened: string[] = []
    for (const { code, token } of candidates) {
      if (token === null) untokened.push(code)
      else tokens.set(code, token)
    }
    let givenBack = 0
    let reserved = 0
    // A redemption without a token (an older version of the service's) cannot be named: voided, as then.
    for (const code of untokened.length > 0 ? await repository.voidCodes(sale, untokened) : []) {
      if (await inventory.voidPurchase(sale, code)) givenBack++
    }
    const released = await repository.releaseRedemptions(sale, [...tokens].map(([code, token]) => ({ code, token })), this.#deps.now())
    for (const { code, voided } of released) {
      if (voided) {
        if (await inventory.voidPurchase(sale, code)) givenBack++
      } else if (await inventory.undoRedeem(sale, code, tokens.get(code) as string)) {
        reserved++
      }
    }
    if (givenBack + reserved > 0) log.warn({ saleId: sale.id, items: suspects, givenBack, reserved }, 'put back purchases that Redis held but Postgres never recorded')
    return givenBack + reserved
  }

  /** Returns expired reservations of the current sale to stock; run periodically. */
  async releaseExpired (): Promise<number> {
    const now = this.#deps.now()
    const sale = this.#calendar.preparedAt(now)
    return sale === null ? 0 : this.#deps.inventory.releaseExpired(sale, now)
  }
}
