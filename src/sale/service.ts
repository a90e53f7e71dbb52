import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { newAttemptId } from '../lib/attempt-id.js'
import type { BatchWriter } from '../db/batch-writer.js'
import { RateLimited, SaleRefusal, ServiceUnavailable, type RefusalCode } from './errors.js'
import type { CheckoutRateLimit, Inventory, SaleCounts } from './inventory.js'
import { random16 } from '../lib/random-pool.js'
import type { CheckoutAttempt, PurchaseRecord } from './record-writers.js'
import { HOUR_MS, saleWindow, type CatalogItem, type Sale } from './sale.js'
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
}

export interface SaleServiceDeps {
  rules: SaleRules
  now: () => number
  repository: SaleRepository
  inventory: Inventory
  checkoutLog: BatchWriter<CheckoutAttempt>
  /** Where an attempt goes whose row the writer failed to (or may not) commit: on disk, fsynced. */
  spool: { append (attempt: CheckoutAttempt): Promise<void> }
  /** Writes spooled attempts as `service_unavailable` rows (records.ts unavailableAttemptWriter). */
  writeUnavailable: (attempts: CheckoutAttempt[]) => Promise<unknown>
  purchaseLog: BatchWriter<PurchaseRecord, number | null>
  /** Throws a 503 at once while Redis is known down (src/redis/readiness.ts). */
  redisReadiness: { assertUp (): void }
  log: Logger
}

/** How long a request waits for another instance's rebuild of a lost sale before a 503. */
const REBUILD_WAIT_MS = 5000
const REBUILD_POLL_MS = 25

/**
 * True when a failed write certainly did not commit: Postgres answered it with an error (it rolled
 * back), or no connection could be had (it was never sent). False for a client-side timeout or a
 * connection lost mid-statement (class 08, 57P01-57P03: the server going away): it may have committed.
 */
const neverCommitted = (error: unknown): boolean => {
  const cause = error instanceof ServiceUnavailable ? error.cause : error
  if (cause instanceof pg.DatabaseError) return !(cause.code ?? '08').startsWith('08') && !/^57P0[1-3]$/.test(cause.code ?? '')
  if (!(cause instanceof Error)) return false
  // pg-pool's own wording when no connection came in time; ECONNREFUSED and friends from the socket.
  return cause.message.startsWith('timeout exceeded when trying to connect') ||
    ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN'].includes((cause as NodeJS.ErrnoException).code ?? '')
}

/** Postgres refused the data itself (classes 22 and 23: data exception, integrity violation): a retry cannot help. */
const refusedRow = (error: unknown): boolean => error instanceof pg.DatabaseError && /^2[23]/.test(error.code ?? '')

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
  /** Codes this instance redeemed in Redis whose purchase row is not committed (or failed) yet. */
  readonly #purchasing = new Set<string>()
  /** Items of sale `#unrecordedSaleId` that Redis counts as sold without a purchase row -> first seen (wall clock). */
  #unrecorded = new Map<number, number>()
  #unrecordedSaleId: number | null = null

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
    const sale = await repository.prepareSale(startsAt, startsAt + HOUR_MS, rules.itemCount, rules.userLimit)
    if (!await inventory.isLive(sale)) {
      await this.restoreHotState(sale)
      log.info({ saleId: sale.id, opensAt: new Date(startsAt) }, 'sale prepared')
    }
    // Only the current and the next sale stay in memory.
    const currentStart = saleWindow(this.now()).startsAt
    for (const start of this.#prepared.keys()) if (start < currentStart) this.#prepared.delete(start)
    this.#prepared.set(startsAt, sale)
    return sale
  }

  /**
   * What the roll's tick calls (and start-up): the current hour's sale, and the next hour's once
   * `now` is within SALE_PREPARE_SECONDS of its opening. Cheap when both are prepared already.
   */
  async prepareAhead (now = this.now()): Promise<void> {
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
    // Every decision needs Redis: while it is known down, fail before asking it anything.
    this.#deps.redisReadiness.assertUp()
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
      this.#decide(sale, () => inventory.reserveItem(sale, userId, itemId, code, now, expiresAt, rules.checkoutRateLimit), (s) => s === 'no_sale'),
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
    const { inventory, repository } = this.#deps
    const now = this.now()
    const sale = await this.currentSale(now).catch(toUnavailable)
    const result = await this.#decide(sale, () => inventory.redeemCode(sale, code, now), (r) => r.status === 'no_sale').catch(toUnavailable)
    if (result.status === 'no_sale') throw new ServiceUnavailable('sale_restoring')
    if (result.status === 'unknown_code') throw new SaleRefusal(await this.#unknownCodeRefusal(code, sale.id))
    if (result.status === 'code_used') throw await this.#codeUsedRefusal(sale, code)
    if (result.status !== 'ok') throw new SaleRefusal(result.status)

    const item = sale.catalog[result.itemId] as CatalogItem
    this.#purchasing.add(code)
    try {
      const purchaseId = await this.#deps.purchaseLog.push({
        saleId: sale.id, saleStartsAt: sale.startsAt, itemId: item.id, userId: result.userId, code, priceCents: item.priceCents, purchasedAt: now
      }).catch((error: unknown) => this.#settleFailedPurchase(sale, code, error))
      if (purchaseId !== null) return { purchaseId, sale, item, userId: result.userId, purchasedAt: now, userPurchases: result.bought }
      // The fence refused it. Either the code was voided first (its purchase taken for
      // abandoned): its item goes back on sale. Or (only after a commit the service had given up
      // on) the item has another purchase: Redis keeps counting it sold, as Postgres does.
      const { settled } = await repository.settlementOf(sale, code).catch(toUnavailable)
      if (settled !== 'voided') throw new SaleRefusal('item_sold')
      await this.#giveBack(sale, code)
      throw new SaleRefusal('code_expired')
    } finally {
      this.#purchasing.delete(code)
    }
  }

  /**
   * A purchase batch failed. An error Postgres answered means the statement rolled back, and one
   * that never got a connection was never sent: nothing was written, and the code holds its item
   * again for a retry. A timeout or a connection lost mid-statement may hide a
   * commit, so the code is settled through the fence instead: voided (then given back), or found
   * purchased after all (then it is a success). If Postgres cannot even be asked, the code stays
   * redeemed in Redis and the reconciler settles it once Postgres answers again.
   */
  async #settleFailedPurchase (sale: Sale, code: string, error: unknown): Promise<number> {
    const { inventory, repository, log } = this.#deps
    const logged = (err: unknown) => log.error({ err, code }, 'could not put back an unrecorded purchase')
    if (neverCommitted(error)) {
      // The buyer may retry with the same code.
      await inventory.undoRedeem(sale, code).catch(logged)
      throw error
    }
    const voided = await repository.voidCodes(sale, [code]).catch(() => null)
    if (voided === null) throw error
    if (voided.length === 0) {
      const { purchase } = await repository.settlementOf(sale, code).catch(() => ({ purchase: null }))
      if (purchase !== null) return purchase.purchaseId
      throw error
    }
    await this.#giveBack(sale, code)
    throw error
  }

  /** A voided code's item goes back on sale (the code itself is dead: it answers code_expired). */
  #giveBack (sale: Sale, code: string): Promise<unknown> {
    return this.#deps.inventory.voidPurchase(sale, code)
      .catch((err: unknown) => this.#deps.log.error({ err, code }, 'could not give back a voided purchase'))
  }

  /**
   * Gives back items that Redis counts as sold but Postgres never recorded: an instance that
   * redeemed a code and died (SIGKILL, OOM, power loss) before its purchase batch committed
   * leaves such an item, and nobody else would ever undo it, so the sale could never sell out
   * exactly. An item is a suspect once it stayed unrecorded for `settleMs`; its code is then
   * voided in Postgres, which waits for a purchase of it that is committing and then leaves it
   * alone, and only a code this call voided has its item given back in Redis. So a slow commit,
   * on this instance or another, is never undone; `settleMs` only decides how soon an abandoned
   * purchase is given back. Run periodically; returns the items given back.
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
    const candidates = (await inventory.redeemedCodes(sale, unsettled)).filter((code) => !this.#purchasing.has(code))
    if (candidates.length === 0) return 0
    let givenBack = 0
    for (const code of await repository.voidCodes(sale, candidates)) {
      if (await inventory.voidPurchase(sale, code)) givenBack++
    }
    if (givenBack > 0) log.warn({ saleId: sale.id, items: suspects, givenBack }, 'gave back purchases that Redis held but Postgres never recorded')
    return givenBack
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

  /** Runs one Redis decision; if Redis lost the sale, restores it from Postgres and decides again. */
  async #decide<T> (sale: Sale, decide: () => Promise<T>, saleLost: (result: T) => boolean): Promise<T> {
    const result = await decide()
    if (!saleLost(result)) return result
    await this.restoreHotState(sale)
    return decide()
  }

  /**
   * A code redeemed before. Once its purchase has committed the refusal names it, so a buyer whose
   * answer was lost learns on retry that the item is theirs; while it commits (a racing
   * redemption), or if Postgres cannot say, it is the bare refusal.
   */
  async #codeUsedRefusal (sale: Sale, code: string): Promise<SaleRefusal> {
    const { purchase } = await this.#deps.repository.settlementOf(sale, code).catch(() => ({ purchase: null }))
    return new SaleRefusal('code_used', purchase === null ? {} : { purchase })
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
   * answers again. A full spool is counted and logged by its plugin; the 503 stands either way.
   */
  async #record (attempt: CheckoutAttempt): Promise<void> {
    try {
      await this.#deps.checkoutLog.push(attempt)
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
