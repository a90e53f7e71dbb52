/**
 * Purchase: a checkout code redeemed in Redis, then its purchase row committed in Postgres behind
 * the settlement fence. A purchase whose write failed is settled here: put back at once when
 * nothing was written, else asked of Postgres (now, or by settleUnresolved once it answers); a
 * retry of a code another request redeemed waits for that redemption to settle.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { failedWrite } from '../db/pg-errors.js'
import { random16 } from '../lib/random-pool.js'
import type { SaleCalendar } from './calendar.js'
import type { SaleServiceDeps } from './deps.js'
import { SaleRefusal, ServiceUnavailable, toUnavailable, type RefusalCode } from './errors.js'
import type { RedeemResult } from './inventory.js'
import type { AbandonedDecisions } from './repair.js'
import type { CatalogItem, Sale } from './sale.js'

export interface Purchase {
  purchaseId: number
  sale: Sale
  item: CatalogItem
  userId: string
  purchasedAt: number
  userPurchases: number
}

/**
 * How long a purchase of a code that another request redeemed (a double submit, a retry after a
 * 503) waits for that redemption to settle (its purchase commits, or the code is put back) before
 * it answers 503: a commit takes milliseconds, and an abandoned redemption is put back within a
 * moment of Postgres answering again.
 */
const SETTLEMENT_WAIT_MS = 2000
const SETTLEMENT_POLL_MS = 50
/** Redemptions of unknown outcome an instance keeps to settle itself; past this the reconciler settles them. */
const MAX_UNRESOLVED = 10_000

/** A redeemed code whose purchase failed without the service learning whether it committed. */
interface Unresolved { sale: Sale, code: string, token: string }

/** What settling such a redemption found: its committed purchase, else whether the code was voided (its expiry had passed). */
interface Resolution { purchase: { purchaseId: number, purchasedAt: number } | null, voided: boolean }

/** Names one redemption of a code (72 random bits, 12 characters): see releaseRedemptions in repository.ts. */
export function newRedemptionToken (): string {
  return random16().toString('base64url', 0, 9)
}

export class Purchases {
  readonly #deps: SaleServiceDeps
  readonly #calendar: SaleCalendar
  readonly #abandoned: AbandonedDecisions
  /** Codes this instance redeemed in Redis whose purchase row is not committed (or failed) yet. */
  readonly #purchasing = new Set<string>()
  /** Redemptions whose purchase failed with an unknown outcome while Postgres could not be asked, by code. */
  readonly #unresolved = new Map<string, Unresolved>()

  constructor (deps: SaleServiceDeps, calendar: SaleCalendar, abandoned: AbandonedDecisions) {
    this.#deps = deps
    this.#calendar = calendar
    this.#abandoned = abandoned
  }

  /** Whether this instance is buying the code right now, or holds its redemption to settle: the reconciler leaves it alone. */
  busyWith (code: string): boolean {
    return this.#purchasing.has(code) || this.#unresolved.has(code)
  }

  async purchase (code: string): Promise<Purchase> {
    const { repository } = this.#deps
    const sale = await this.#calendar.currentSale(this.#deps.now()).catch(toUnavailable)
    let now = this.#deps.now()
    let token = newRedemptionToken()
    let result = await this.#redeem(sale, code, now, token)
    if (result.status === 'code_used') {
      // Redeemed by another request: bought (the refusal names the purchase), or being settled.
      // Once that settles the code may hold its item again (the other purchase was put back): then
      // this request redeems it.
      await this.#awaitSettlement(sale, code)
      now = this.#deps.now()
      token = newRedemptionToken()
      result = await this.#redeem(sale, code, now, token)
      if (result.status === 'code_used') throw new ServiceUnavailable('purchase_settling')
    }
    if (result.status === 'no_sale') throw new ServiceUnavailable('sale_restoring')
    if (result.status === 'unknown_code') throw new SaleRefusal(await this.#unknownCodeRefusal(code, sale.id))
    if (result.status !== 'ok') throw new SaleRefusal(result.status)

    const item = sale.catalog[result.itemId] as CatalogItem
    const bought = (purchase: { purchaseId: number, purchasedAt: number }): Purchase =>
      ({ ...purchase, sale, item, userId: result.userId, userPurchases: result.bought })
    this.#purchasing.add(code)
    try {
      const recorded = await this.#deps.purchaseWriter.push({
        saleId: sale.id, saleStartsAt: sale.startsAt, itemId: item.id, userId: result.userId, code, priceCents: item.priceCents, purchasedAt: now, redemption: token
      }).then(
        (purchaseId) => purchaseId === null ? null : { purchaseId, purchasedAt: now },
        (error: unknown) => this.#settleFailedPurchase(sale, code, token, error))
      if (recorded !== null) return bought(recorded)
      // The fence refused it. The code was voided first (its purchase taken for abandoned, its
      // expiry past): its item goes back on sale. Or this redemption was put back (by a reconciler
      // that took it for abandoned): the code holds its item again, and a retry buys. Or an earlier
      // redemption's purchase, given up on, committed after all: it is this code's purchase. Or
      // (only after a commit the service had given up on) the item has another purchase: Redis
      // keeps counting it sold, as Postgres does.
      const settlement = await repository.settlementOf(sale, code, token).catch(toUnavailable)
      const { settled, purchase, released } = settlement
      if (purchase !== null) return bought(purchase)
      // Or Postgres never recorded the code (the hold of a checkout decision the service had given
      // up on): it can never buy, and its item goes back on sale.
      if (settled === 'voided' || !settlement.recorded) {
        await this.#giveBack(sale, code)
        throw new SaleRefusal('code_expired')
      }
      if (released) {
        await this.#deps.inventory.undoRedeem(sale, code, token).catch((err: unknown) => this.#deps.log.error({ err, code }, 'could not put back a released redemption'))
        throw new ServiceUnavailable('write_failed')
      }
      throw new SaleRefusal('item_sold')
    } finally {
      this.#purchasing.delete(code)
    }
  }

  /** One redemption by `token`; if its answer never came, it is undone (see AbandonedDecisions.abandon). */
  #redeem (sale: Sale, code: string, now: number, token: string): Promise<RedeemResult> {
    return this.#calendar.decide(sale, () => this.#deps.inventory.redeemCode(sale, code, now, token), (r) => r.status === 'no_sale')
      .catch((error: unknown) => this.#abandoned.abandon(error, { sale, code, kind: 'redemption', token }))
      .catch(toUnavailable)
  }

  /**
   * A purchase batch failed. If nothing was written (the statement was never sent, or Postgres
   * answered it with an error: it rolled back), the code holds its item again at once, for a retry.
   * If the outcome is unknown (the connection lost mid-statement, the client's timeout), Postgres
   * is asked behind the fence (#resolve): the purchase committed after all (a success), or it never
   * can and the code holds its item again (a 503, the retry buys), or the code's own expiry has
   * passed (voided, its item back on sale). If Postgres cannot be asked now, the code stays
   * redeemed in Redis and this instance settles it as soon as Postgres answers (settleUnresolved;
   * a retry meanwhile waits for that, see #awaitSettlement).
   */
  async #settleFailedPurchase (sale: Sale, code: string, token: string, error: unknown): Promise<{ purchaseId: number, purchasedAt: number }> {
    if (failedWrite(error) !== 'unknown') {
      const undone = await this.#deps.inventory.undoRedeem(sale, code, token).then(() => true, (err: unknown) => {
        this.#deps.log.error({ err, code }, 'could not put back an unrecorded purchase')
        return false
      })
      if (!undone) this.#keepUnresolved({ sale, code, token })
      throw error
    }
    let resolution: Resolution
    try {
      resolution = await this.#resolve(sale, code, token)
    } catch {
      this.#keepUnresolved({ sale, code, token })
      throw error
    }
    if (resolution.purchase !== null) return resolution.purchase
    if (resolution.voided) throw new SaleRefusal('code_expired')
    throw error
  }

  /**
   * Settles a redemption whose purchase was given up on: Postgres's fence (releaseRedemptions)
   * either finds the code settled, or settles it now so that purchase can never commit, and Redis
   * follows. Purchased: that purchase stands. Put back: the code is reserved again (its redemption
   * undone: a retry redeems it anew). Voided (its expiry had passed, or someone voided it): its item
   * goes back on sale. Throws while Postgres or Redis cannot be asked; calling it again is safe.
   */
  async #resolve (sale: Sale, code: string, token: string): Promise<Resolution> {
    const { inventory, repository } = this.#deps
    const [released] = await repository.releaseRedemptions(sale, [{ code, token }], this.#deps.now())
    if (released !== undefined) {
      if (released.voided) await inventory.voidPurchase(sale, code)
      else await inventory.undoRedeem(sale, code, token)
      return { purchase: null, voided: released.voided }
    }
    const { purchase } = await repository.settlementOf(sale, code)
    if (purchase !== null) return { purchase, voided: false }
    // Voided already (a reconciler, or a checkout rewritten by the spool's replay): no purchase
    // of the code can ever commit, so its item goes back.
    await inventory.voidPurchase(sale, code)
    return { purchase: null, voided: true }
  }

  #keepUnresolved (unresolved: Unresolved): void {
    if (this.#unresolved.size >= MAX_UNRESOLVED) {
      this.#deps.log.warn({ code: unresolved.code }, 'too many unsettled purchases held; the reconciler settles this one')
      return
    }
    this.#unresolved.set(unresolved.code, unresolved)
  }

  /**
   * Settles the redemptions this instance gave up on while Postgres (or Redis) could not be asked;
   * run often (plugins/jobs.ts), it costs nothing while there are none. Stops at the first that
   * still cannot be settled, for the next run. Returns how many were settled.
   */
  async settleUnresolved (): Promise<number> {
    let settled = 0
    for (const { sale, code, token } of [...this.#unresolved.values()]) {
      try {
        await this.#resolve(sale, code, token)
      } catch (err) {
        this.#deps.log.debug({ err, code }, 'an unsettled purchase still cannot be settled')
        break
      }
      if (this.#unresolved.get(code)?.token === token) this.#unresolved.delete(code)
      settled++
    }
    if (settled > 0) this.#deps.log.info({ settled, left: this.#unresolved.size }, 'settled purchases given up on while Postgres was unreachable')
    return settled
  }

  /**
   * A purchase found the code redeemed by another request. Returns once the code holds its item
   * again (that request's purchase was put back); throws `code_used` naming the purchase once it
   * has committed (a buyer whose answer was lost learns the item is theirs), `code_expired` if the
   * code was voided, and a 503 if it is still unsettled after SETTLEMENT_WAIT_MS or Postgres cannot
   * say: never a bare `code_used`, which a client could not tell from a purchase lost.
   */
  async #awaitSettlement (sale: Sale, code: string): Promise<void> {
    const { inventory, repository } = this.#deps
    const deadline = Date.now() + SETTLEMENT_WAIT_MS
    for (;;) {
      const { settled, purchase } = await repository.settlementOf(sale, code).catch(toUnavailable)
      if (purchase !== null) throw new SaleRefusal('code_used', { purchase })
      if (settled === 'voided') throw new SaleRefusal('code_expired')
      if (await inventory.holdsCode(sale, code).catch(toUnavailable)) return
      if (Date.now() >= deadline) throw new ServiceUnavailable('purchase_settling')
      await sleep(SETTLEMENT_POLL_MS)
    }
  }

  /** A voided code's item goes back on sale (the code itself is dead: it answers code_expired). */
  #giveBack (sale: Sale, code: string): Promise<unknown> {
    return this.#deps.inventory.voidPurchase(sale, code)
      .catch((err: unknown) => this.#deps.log.error({ err, code }, 'could not give back a voided purchase'))
  }

  /** A code unknown to the current sale: one issued in an earlier hour gets "sale over". */
  async #unknownCodeRefusal (code: string, currentSaleId: number): Promise<RefusalCode> {
    const codeSale = await this.#deps.repository.saleOfCode(code).catch(toUnavailable)
    return codeSale !== null && codeSale !== currentSaleId ? 'sale_over' : 'unknown_code'
  }
}
