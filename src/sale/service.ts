import { setTimeout as sleep } from 'node:timers/promises'
import { newAttemptId } from '../lib/attempt-id.js'
import type { BatchWriter } from '../db/batch-writer.js'
import { failedWrite, refusedRow } from '../db/pg-errors.js'
import { RateLimited, SaleRefusal, ServiceUnavailable, type RefusalCode } from './errors.js'
import { mayHaveRun, type CheckoutRateLimit, type Inventory, type RedeemResult, type SaleCounts } from './inventory.js'
import { random16 } from '../lib/random-pool.js'
import type { CheckoutAttempt, PurchaseRecord } from './record-writers.js'
import { HOUR_MS, saleWindow, type CatalogItem, type Sale } from './sale.js'
import { SaleOutOfOrder, type SaleRepository } from './repository.js'

export interface SaleRules {
  itemCount: number
  userLimit: number
  checkoutTtlMs: number
  /** How long before its opening the next hour's sale is prepared. */
  prepareAheadMs: number
  /** The per-user abuse limit on checkout tries. */
  checkoutRateLimit: CheckoutRateLimit
}

export interface Reservation {
  code: string
  expiresAt: number
  sale: Sale
  item: CatalogItem
}

export interface Purchase {
  purchaseId: number
  sale: Sale
  item: CatalogItem
  userId: string
  purchasedAt: number
  userPurchases: number
}

export interface SaleSummary extends SaleCounts {
  sale: Sale
  left: number
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

/**
 * Decisions given up on (see #abandon) that one instance keeps undoing until Redis answers: past
 * this many, new ones are only logged (their holds still expire; a redemption is then left to the
 * purchase reconciler).
 */
const MAX_ABANDONED = 100_000
/** Abandoned decisions undone per settleAbandoned call: a backlog after a long stall goes back in bounded bursts. */
const SETTLE_ABANDONED_BATCH = 500

/** A Redis decision whose answer the service gave up on (it answered 503), and how to undo it. */
type Abandoned =
  /** A checkout's hold (undo: cancel it); one that expired is released by the sweep anyway (sale clock, ms). */
  | { kind: 'hold', sale: Sale, code: string, expiresAt: number }
  /** A purchase's redemption (undo: back to reserved), by its token: only that redemption is undone. */
  | { kind: 'redemption', sale: Sale, code: string, token: string }

const abandonedKey = (d: Abandoned): string => `${d.kind}:${d.code}:${d.kind === 'redemption' ? d.token : ''}`

/** How long a request waits for another instance's rebuild of a lost sale before a 503. */
const REBUILD_WAIT_MS = 5000
const REBUILD_POLL_MS = 25
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

/** Postgres or Redis failed underneath: the client gets a 503 with Retry-After, not a 500. */
const toUnavailable = (error: unknown): never => {
  if (error instanceof ServiceUnavailable || error instanceof SaleRefusal) throw error
  throw new ServiceUnavailable('dependency_failed', { cause: error })
}

/** A checkout before its sale's start: when it opens, and a Retry-After to then. */
const notOpenYet = (sale: Sale, now: number): SaleRefusal =>
  new SaleRefusal('no_active_sale', {
    message: `Sale ${sale.id} opens at ${new Date(sale.startsAt).toISOString()}.`,
    retryAfterSeconds: Math.max(1, Math.ceil((sale.startsAt - now) / 1000))
  })

/** 16 bytes from the CSPRNG: 128 bits, base64url without padding (22 characters). */
export function newCheckoutCode (): string {
  return random16().toString('base64url')
}

/** Names one redemption of a code (72 random bits, 12 characters): see releaseRedemptions in sale-repository.ts. */
export function newRedemptionToken (): string {
  return random16().toString('base64url', 0, 9)
}

/**
 * The business rules of the hourly sale, free of HTTP. Redis decides (one Lua script per
 * decision), Postgres records; a call returns only after its record is committed.
 */
export class SaleService {
  readonly #deps: SaleServiceDeps
  /** Prepared sales by start time: the current hour's and, from SALE_PREPARE_SECONDS before it opens, the next. */
  readonly #prepared = new Map<number, Sale>()
  readonly #preparing = new Map<number, Promise<Sale>>()
  readonly #restoring = new Map<number, Promise<void>>()
  /** Hours Postgres refused to open (SaleOutOfOrder): refused from memory from then on, no query per request. */
  readonly #outOfOrder = new Set<number>()
  /** Codes this instance redeemed in Redis whose purchase row is not committed (or failed) yet. */
  readonly #purchasing = new Set<string>()
  /** Redemptions whose purchase failed with an unknown outcome while Postgres could not be asked, by code. */
  readonly #unresolved = new Map<string, Unresolved>()
  /** Items of sale `#unrecordedSaleId` that Redis counts as sold without a purchase row -> first seen (wall clock). */
  #unrecorded = new Map<number, number>()
  #unrecordedSaleId: number | null = null
  /** Redis decisions this instance gave up on that may have run, until undone (see #abandon). */
  readonly #abandoned = new Map<string, Abandoned>()
  /** Names this instance's redemptions (with a counter) apart from any other instance's. */
  /** Abandoned decisions past MAX_ABANDONED since settleAbandoned last logged them. */
  #abandonedDropped = 0

  constructor (deps: SaleServiceDeps) {
    this.#deps = deps
  }

  now (): number {
    return this.#deps.now()
  }

  /**
   * Prepares the sale that starts at `startsAt`: creates it in Postgres (with its catalog) and
   * seeds Redis, both idempotently, on any number of instances. Preparing is not opening: the
   * decision scripts accept checkouts only from the sale's start, by the clock. Concurrent
   * callers here share one preparation.
   */
  prepareSale (startsAt: number): Promise<Sale> {
    const cached = this.#prepared.get(startsAt)
    if (cached !== undefined) return Promise.resolve(cached)
    if (this.#outOfOrder.has(startsAt)) return Promise.reject(new ServiceUnavailable('clock_skew'))
    let pending = this.#preparing.get(startsAt)
    if (pending === undefined) {
      pending = this.#prepare(startsAt)
        .catch((error: unknown) => { throw error instanceof ServiceUnavailable ? error : new ServiceUnavailable('sale_unprepared', { cause: error }) })
        .finally(() => this.#preparing.delete(startsAt))
      this.#preparing.set(startsAt, pending)
    }
    return pending
  }

  async #prepare (startsAt: number): Promise<Sale> {
    const { rules, repository, inventory, log } = this.#deps
    const sale = await repository.prepareSale(startsAt, startsAt + HOUR_MS, rules.itemCount, rules.userLimit).catch((error: unknown) => {
      if (!(error instanceof SaleOutOfOrder)) throw error
      // This instance's clock is behind what the others already did: its hour is over.
      this.#outOfOrder.add(startsAt)
      log.error({ err: error, now: new Date(this.now()) }, 'refused to open a sale whose hour is over: this instance\'s clock is behind')
      throw new ServiceUnavailable('clock_skew', { cause: error })
    })
    if (!await inventory.isLive(sale)) {
      await this.restoreHotState(sale)
      log.info({ saleId: sale.id, opensAt: new Date(startsAt) }, 'sale prepared')
    }
    // Only the current and the next sale stay in memory.
    const currentStart = saleWindow(this.now()).startsAt
    for (const start of this.#prepared.keys()) if (start < currentStart) this.#prepared.delete(start)
    for (const start of this.#outOfOrder) if (start < currentStart) this.#outOfOrder.delete(start)
    this.#prepared.set(startsAt, sale)
    return sale
  }

  /**
   * What the roll's tick calls (and start-up): the current hour's sale, and the next hour's once
   * `now` is within SALE_PREPARE_SECONDS of its opening. Cheap when both are prepared already.
   */
  async prepareAhead (now = this.now()): Promise<void> {
    this.#deps.clockCheck.assertSound()
    const { startsAt, endsAt } = saleWindow(now)
    await this.prepareSale(startsAt)
    if (endsAt - now <= this.#deps.rules.prepareAheadMs) await this.prepareSale(endsAt)
  }

  /** The next hour's sale once this instance has prepared it (SALE_PREPARE_SECONDS before it opens), else null. */
  preparedNextSale (now = this.now()): Sale | null {
    return this.#prepared.get(saleWindow(now).endsAt) ?? null
  }

  /** The prepared sale open at `now`, if this instance holds it in memory; never touches Postgres. */
  #preparedAt (now: number): Sale | null {
    return this.#prepared.get(saleWindow(now).startsAt) ?? null
  }

  /**
   * Makes sure Redis holds the sale's state, rebuilding it from Postgres if Redis lost it
   * (flush, restart without persistence) or never had it. One instance rebuilds under a lock;
   * the others, and concurrent requests here, wait for it and then carry on. Requests never get
   * an answer from half-restored state: the decision scripts see no meta until the end.
   */
  restoreHotState (sale: Sale): Promise<void> {
    let pending = this.#restoring.get(sale.id)
    if (pending === undefined) {
      pending = this.#restore(sale).finally(() => this.#restoring.delete(sale.id))
      this.#restoring.set(sale.id, pending)
    }
    return pending
  }

  /** Called when Redis reconnects: whatever it lost of the prepared sales comes back now. */
  async restorePreparedSales (): Promise<void> {
    await Promise.all([...this.#prepared.values()].map((sale) => this.restoreHotState(sale)))
  }

  async #restore (sale: Sale): Promise<void> {
    const { inventory, repository, log } = this.#deps
    const deadline = Date.now() + REBUILD_WAIT_MS
    while (!await inventory.isLive(sale)) {
      if (await inventory.lockRebuild(sale)) {
        try {
          if (await inventory.isLive(sale)) return
          const accepted = await repository.acceptedCheckouts(sale)
          await inventory.rebuild(sale, accepted, this.now())
          if (accepted.length > 0) log.warn({ saleId: sale.id, codes: accepted.length }, 'sale state rebuilt in Redis from Postgres')
          return
        } finally {
          await inventory.unlockRebuild(sale)
        }
      }
      if (Date.now() > deadline) throw new ServiceUnavailable('sale_restoring')
      await sleep(REBUILD_POLL_MS)
    }
  }

  /**
   * The sale open at `now`. Normally prepared ahead and answered from memory; if the roll could
   * not prepare it in time (a frozen process, Postgres down at XX:59), the first request of the
   * hour prepares it, and the others wait for that one preparation.
   */
  async currentSale (now: number): Promise<Sale> {
    // Every decision needs Redis: while it is known down, fail before asking it anything. And a
    // clock the others disagree with must not pick the sale (an hour over, or not begun).
    this.#deps.redisReadiness.assertUp()
    this.#deps.clockCheck.assertSound()
    return this.prepareSale(saleWindow(now).startsAt)
  }

  async checkout (userId: string, itemId: number): Promise<Reservation> {
    const { inventory, rules } = this.#deps
    const now = this.now()
    const attemptId = newAttemptId()
    const sale = await this.#orUnavailable(this.currentSale(now), { attemptId, saleId: null, saleStartsAt: null, userId, itemId, attemptedAt: now })
    const attempt = { attemptId, saleId: sale.id, saleStartsAt: sale.startsAt, userId, itemId, attemptedAt: now }

    const code = newCheckoutCode()
    const expiresAt = Math.min(now + rules.checkoutTtlMs, sale.endsAt)
    const status = await this.#orUnavailable(
      this.#decide(sale, () => inventory.reserveItem(sale, userId, itemId, code, now, expiresAt, rules.checkoutRateLimit), (s) => s === 'no_sale')
        .catch((error: unknown) => this.#abandon(error, { sale, code, kind: 'hold', expiresAt })),
      attempt)
    if (status === 'no_sale') {
      await this.#record({ ...attempt, outcome: 'service_unavailable', code: null, expiresAt: null })
      throw new ServiceUnavailable('sale_restoring')
    }
    if (status === 'not_open') return this.#refuseCheckout(notOpenYet(sale, now), attempt)
    // An abuse-limited try costs no attempt row: a loop hammering one id is what the limit stops.
    if (status === 'rate_limited') throw this.#rateLimited(now)
    if (typeof status !== 'string') {
      const [refusal, heldCode, heldUntil] = status
      return this.#refuseCheckout(new SaleRefusal(refusal, { hold: { code: heldCode, expiresAt: Number(heldUntil) } }), attempt)
    }
    if (status !== 'ok') return this.#refuseCheckout(status, attempt)

    const accepted: CheckoutAttempt = { ...attempt, outcome: 'accepted', code, expiresAt }
    try {
      await this.#record(accepted)
    } catch (error) {
      // Not acknowledged: give the item back now rather than hold it for nobody. If the row
      // commits after all (late), the spool's replay turns it into a service_unavailable row and
      // cancels the hold again (see settleSpooled).
      await inventory.cancelReservation(sale, code).catch((err: unknown) => this.#deps.log.error({ err }, 'could not cancel an unrecorded reservation'))
      throw error
    }
    // If Redis lost the sale meanwhile and a rebuild read Postgres before this row committed, the
    // rebuilt state does not know the code: a 200 for it could never buy. So the code must still
    // hold its item (one HGET; a rebuild under way is waited for). If not, the answer is a 503 and
    // the committed row is rewritten through the spool like any unacknowledged one.
    if (!await this.#stillHeld(sale, code)) {
      await this.#deps.spool.append(accepted).catch(() => {})
      throw new ServiceUnavailable('sale_restoring')
    }
    return { code, expiresAt, sale, item: sale.catalog[itemId] as CatalogItem }
  }

  async #stillHeld (sale: Sale, code: string): Promise<boolean> {
    const { inventory } = this.#deps
    try {
      if (await inventory.holdsCode(sale, code)) return true
      await this.restoreHotState(sale)
      return await inventory.holdsCode(sale, code)
    } catch (err) {
      // Rare and worth knowing: a committed checkout answered 503 (the spool voids its row).
      this.#deps.log.warn({ err, saleId: sale.id }, 'could not confirm the hold of a committed checkout')
      return false
    }
  }

  #rateLimited (now: number): RateLimited {
    const { windowMs } = this.#deps.rules.checkoutRateLimit
    const retryAfter = Math.max(1, Math.ceil((windowMs - (now % windowMs)) / 1000))
    return new RateLimited(`Too many checkout attempts from this user; retry in ${retryAfter} s.`, retryAfter)
  }

  /**
   * Records a checkout request that failed validation (or was refused before it got to the sale,
   * e.g. by the drain: `service_unavailable`), then lets the caller refuse it.
   */
  async recordRefusedCheckout (userId: string | null, itemId: number | null, outcome: 'invalid_request' | 'service_unavailable' = 'invalid_request'): Promise<void> {
    const now = this.now()
    const sale = this.#preparedAt(now)
    await this.#record({ attemptId: newAttemptId(), saleId: sale?.id ?? null, saleStartsAt: sale?.startsAt ?? null, userId, itemId, outcome, code: null, expiresAt: null, attemptedAt: now })
  }

  /**
   * Settles attempts the spool kept (answered 503: their row failed, or may have committed behind
   * the client's back): each becomes a `service_unavailable` row at its original time, and an
   * accepted one that committed late loses its code. Only then is its hold cancelled in Redis
   * again, after the sale is live: a rebuild that read Postgres before the rewrite may have put
   * the code back, and one that reads it after never will. Idempotent, as the spool requires.
   */
  async settleSpooled (attempts: CheckoutAttempt[]): Promise<void> {
    const { inventory, writeUnavailable, log } = this.#deps
    await writeUnavailable(attempts).catch(async (error: unknown) => {
      if (!refusedRow(error)) throw error
      // One row Postgres will never take (its sale deleted meanwhile, ...) must not hold the rest
      // of the spool back forever: row by row, and only such a row is dropped, logged.
      for (const attempt of attempts) {
        await writeUnavailable([attempt]).catch((err: unknown) => {
          if (!refusedRow(err)) throw err
          log.error({ err, attemptId: attempt.attemptId }, 'Postgres refused a spooled checkout attempt; dropped')
        })
      }
    })
    const now = this.now()
    const held = attempts.filter((a) => a.code !== null && a.expiresAt !== null && a.expiresAt > now)
    if (held.length === 0) return
    // Sales this instance holds (the current one while it serves): a code of an earlier sale
    // expired with it.
    for (const sale of this.#prepared.values()) {
      const codes = held.filter((a) => a.saleId === sale.id)
      if (codes.length === 0) continue
      await this.restoreHotState(sale)
      for (const attempt of codes) await inventory.cancelReservation(sale, attempt.code as string)
    }
  }

  async purchase (code: string): Promise<Purchase> {
    const { repository } = this.#deps
    const sale = await this.currentSale(this.now()).catch(toUnavailable)
    let now = this.now()
    let token = newRedemptionToken()
    let result = await this.#redeem(sale, code, now, token)
    if (result.status === 'code_used') {
      // Redeemed by another request: bought (the refusal names the purchase), or being settled.
      // Once that settles the code may hold its item again (the other purchase was put back): then
      // this request redeems it.
      await this.#awaitSettlement(sale, code)
      now = this.now()
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

  /** One redemption by `token`; if its answer never came, it is undone (see #abandon). */
  #redeem (sale: Sale, code: string, now: number, token: string): Promise<RedeemResult> {
    return this.#decide(sale, () => this.#deps.inventory.redeemCode(sale, code, now, token), (r) => r.status === 'no_sale')
      .catch((error: unknown) => this.#abandon(error, { sale, code, kind: 'redemption', token }))
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
    const [released] = await repository.releaseRedemptions(sale, [{ code, token }], this.now())
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
   * run often (plugins/sales.ts), it costs nothing while there are none. Stops at the first that
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
    const sale = this.#preparedAt(this.now())
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
      .filter(({ code }) => !this.#purchasing.has(code) && !this.#unresolved.has(code))
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
    const released = await repository.releaseRedemptions(sale, [...tokens].map(([code, token]) => ({ code, token })), this.now())
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

  /** Sold / held / left of the sale open at `now` (the caller's reading of the clock, so what it shows next to it agrees). */
  async summary (now = this.now()): Promise<SaleSummary> {
    const sale = await this.currentSale(now).catch(toUnavailable)
    const counts = await this.#decide(sale, () => this.#deps.inventory.counts(sale), (c) => c.items === 0).catch(toUnavailable)
    return { sale, ...counts, left: counts.items - counts.sold - counts.held }
  }

  /** Returns expired reservations of the current sale to stock; run periodically. */
  async releaseExpired (): Promise<number> {
    const now = this.now()
    const sale = this.#preparedAt(now)
    return sale === null ? 0 : this.#deps.inventory.releaseExpired(sale, now)
  }

  /**
   * A decision whose answer never came (a command timeout, a connection lost while it was in
   * flight): the client gets a 503, so whatever the decision did must be undone. Redis reads past
   * its deadline do nothing (Inventory), but one read just before its deadline whose answer came
   * late did run. Its undo is sent now: after the decision in any case (sent after the client gave
   * up, and on the same connection right behind it), so it undoes that decision or finds nothing
   * to undo, and never anything else (a hold by its own code, a redemption by its token). Until
   * Redis answers it, settleAbandoned sends it again. Rethrows `error`.
   */
  #abandon (error: unknown, decision: Abandoned): never {
    if (mayHaveRun(error)) {
      if (this.#abandoned.size < MAX_ABANDONED) {
        this.#abandoned.set(abandonedKey(decision), decision)
        this.#undoAbandoned(decision).catch(() => {})
      } else {
        this.#abandonedDropped++
      }
    }
    throw error
  }

  /** Undoes one abandoned decision; forgets it once Redis answered. */
  async #undoAbandoned (decision: Abandoned): Promise<void> {
    const { inventory } = this.#deps
    if (decision.kind === 'hold') await inventory.cancelReservation(decision.sale, decision.code)
    else await inventory.undoRedeem(decision.sale, decision.code, decision.token)
    this.#abandoned.delete(abandonedKey(decision))
  }

  /**
   * Sends again the undos of decisions given up on (#abandon) that Redis has not answered yet
   * (it was stalled or away); run periodically. Cheap when there are none. Returns how many are
   * left. A hold past its expiry, or of a sale this instance no longer serves, is dropped: the
   * sweep releases the one, and the other is over.
   */
  async settleAbandoned (): Promise<number> {
    if (this.#abandonedDropped > 0) {
      this.#deps.log.error({ dropped: this.#abandonedDropped, max: MAX_ABANDONED }, 'too many abandoned Redis decisions: some are not undone (their holds expire; their redemptions are left to the purchase reconciler)')
      this.#abandonedDropped = 0
    }
    if (this.#abandoned.size === 0) return 0
    // While Redis is known down each undo would only wait out its timeout.
    this.#deps.redisReadiness.assertUp()
    const now = this.now()
    const serving = new Set([...this.#prepared.values()].map((sale) => sale.id))
    for (const [key, decision] of this.#abandoned) {
      if (!serving.has(decision.sale.id) || (decision.kind === 'hold' && decision.expiresAt <= now)) this.#abandoned.delete(key)
    }
    const batch = [...this.#abandoned.values()].slice(0, SETTLE_ABANDONED_BATCH)
    await Promise.all(batch.map((decision) => this.#undoAbandoned(decision).catch(() => {})))
    return this.#abandoned.size
  }

  /** Runs one Redis decision; if Redis lost the sale, restores it from Postgres and decides again. */
  async #decide<T> (sale: Sale, decide: () => Promise<T>, saleLost: (result: T) => boolean): Promise<T> {
    const result = await decide()
    if (!saleLost(result)) return result
    await this.restoreHotState(sale)
    return decide()
  }

  /** A code unknown to the current sale: one issued in an earlier hour gets "sale over". */
  async #unknownCodeRefusal (code: string, currentSaleId: number): Promise<RefusalCode> {
    const codeSale = await this.#deps.repository.saleOfCode(code).catch(toUnavailable)
    return codeSale !== null && codeSale !== currentSaleId ? 'sale_over' : 'unknown_code'
  }

  async #refuseCheckout (refusal: RefusalCode | SaleRefusal, attempt: Omit<CheckoutAttempt, 'outcome' | 'code' | 'expiresAt'>): Promise<never> {
    const error = refusal instanceof SaleRefusal ? refusal : new SaleRefusal(refusal)
    await this.#record({ ...attempt, outcome: error.code, code: null, expiresAt: null })
    throw error
  }

  /**
   * Every checkout read is a row: if its batch fails (or Postgres cannot take it now), the attempt
   * goes to the spool, on disk before the client hears its 503, and is replayed when Postgres
   * answers again. An attempt the spool cannot keep (full, or its disk refused the write) it
   * counts as dropped and logs (plugins/spool.ts); the 503 stands either way, which is what is
   * true: no code was given, and the attempt may have no row.
   */
  async #record (attempt: CheckoutAttempt): Promise<void> {
    try {
      await this.#deps.attemptWriter.push(attempt)
    } catch (error) {
      await this.#deps.spool.append(attempt).catch(() => {})
      throw error
    }
  }

  /** A dependency failure mid-checkout is still an attempt: record it, then answer 503. */
  async #orUnavailable<T> (work: Promise<T>, attempt: Omit<CheckoutAttempt, 'outcome' | 'code' | 'expiresAt'>): Promise<T> {
    try {
      return await work
    } catch (error) {
      // If Postgres cannot take the row either, the spool has it.
      await this.#record({ ...attempt, outcome: 'service_unavailable', code: null, expiresAt: null }).catch(() => {})
      return toUnavailable(error)
    }
  }
}
