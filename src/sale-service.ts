import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { BatchWriter } from './batch-writer.js'
import { SaleRefusal, ServiceUnavailable, type RefusalCode } from './errors.js'
import type { Inventory, SaleCounts } from './inventory.js'
import type { CheckoutAttempt, PurchaseRecord } from './records.js'
import { saleWindow, type CatalogItem, type Sale } from './sale.js'
import type { SaleRepository } from './sale-repository.js'

export interface SaleRules {
  itemCount: number
  userLimit: number
  checkoutTtlMs: number
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
  purchaseLog: BatchWriter<PurchaseRecord, number>
  log: Logger
}

/** How long a request waits for another instance's rebuild of a lost sale before a 503. */
const REBUILD_WAIT_MS = 5000
const REBUILD_POLL_MS = 25

/** Postgres or Redis failed underneath: the client gets a 503 with Retry-After, not a 500. */
const toUnavailable = (error: unknown): never => {
  if (error instanceof ServiceUnavailable || error instanceof SaleRefusal) throw error
  throw new ServiceUnavailable('dependency_failed', { cause: error })
}

const CODE_BYTES = 16
const CODES_PER_REFILL = 1024
let codePool = Buffer.alloc(0)
let codeOffset = 0

/**
 * 16 bytes from the CSPRNG: 128 bits, base64url without padding (22 characters). Bytes are
 * drawn 16 KiB at a time: one randomFillSync per call cost more than the rest of a refusal.
 */
export function newCheckoutCode (): string {
  if (codeOffset === codePool.length) {
    codePool = randomBytes(CODE_BYTES * CODES_PER_REFILL)
    codeOffset = 0
  }
  const code = codePool.toString('base64url', codeOffset, codeOffset + CODE_BYTES)
  codeOffset += CODE_BYTES
  return code
}

/**
 * The business rules of the hourly sale, free of HTTP. Redis decides (one Lua script per
 * decision), Postgres records; a call returns only after its record is committed.
 */
export class SaleService {
  readonly #deps: SaleServiceDeps
  #current: Sale | null = null
  #loading: Promise<Sale | null> | null = null
  readonly #restoring = new Map<number, Promise<void>>()
  /** Codes this instance redeemed in Redis whose purchase row is not committed (or failed) yet. */
  readonly #purchasing = new Set<string>()
  /** Items Redis counts as sold without a purchase row in Postgres -> when that was first seen (wall clock). */
  #unrecorded = new Map<number, number>()

  constructor (deps: SaleServiceDeps) {
    this.#deps = deps
  }

  now (): number {
    return this.#deps.now()
  }

  /**
   * Opens the sale of the hour containing `now`: creates it in Postgres and seeds Redis,
   * both idempotently. The cron plugin calls this at XX:00 and at start-up.
   */
  async openSale (now = this.now()): Promise<Sale> {
    const { rules, repository, inventory, log } = this.#deps
    const { startsAt, endsAt } = saleWindow(now)
    const sale = await repository.openSale(startsAt, endsAt, rules.itemCount, rules.userLimit)
    if (!await inventory.isLive(sale)) {
      await this.restoreHotState(sale)
      log.info({ saleId: sale.id, startsAt: new Date(startsAt) }, 'sale opened')
    }
    this.#current = sale
    return sale
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

  /** Called when Redis reconnects: whatever it lost of the current sale comes back now. */
  async restoreCurrentSale (): Promise<void> {
    if (this.#current !== null) await this.restoreHotState(this.#current)
  }

  async #restore (sale: Sale): Promise<void> {
    const { inventory, repository, log } = this.#deps
    const deadline = Date.now() + REBUILD_WAIT_MS
    while (!await inventory.isLive(sale)) {
      if (await inventory.lockRebuild(sale)) {
        try {
          if (await inventory.isLive(sale)) return
          const accepted = await repository.acceptedCheckouts(sale.id)
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
   * The sale open at `now`, or null. Never creates a sale (that is the roll's job, so a
   * stampede at XX:00 cannot pile catalog writes onto the request path); it only picks up a
   * sale another instance or the cron already opened.
   */
  async currentSale (now: number): Promise<Sale | null> {
    const cached = this.#current
    if (cached !== null && now >= cached.startsAt && now < cached.endsAt) return cached
    this.#loading ??= this.#loadSale(now).finally(() => { this.#loading = null })
    const sale = await this.#loading
    return sale !== null && now >= sale.startsAt && now < sale.endsAt ? sale : null
  }

  async #loadSale (now: number): Promise<Sale | null> {
    const sale = await this.#deps.repository.findSale(saleWindow(now).startsAt)
    if (sale === null) return null
    await this.restoreHotState(sale)
    this.#current = sale
    return sale
  }

  async checkout (userId: string, itemId: number): Promise<Reservation> {
    const { inventory, rules } = this.#deps
    const now = this.now()
    const sale = await this.#orUnavailable(this.currentSale(now), { saleId: null, userId, itemId, attemptedAt: now })
    if (sale === null) return this.#refuseCheckout('no_active_sale', { saleId: null, userId, itemId, attemptedAt: now })

    const code = newCheckoutCode()
    const expiresAt = Math.min(now + rules.checkoutTtlMs, sale.endsAt)
    const status = await this.#orUnavailable(
      this.#decide(sale, () => inventory.reserveItem(sale, userId, itemId, code, now, expiresAt), (s) => s === 'no_sale'),
      { saleId: sale.id, userId, itemId, attemptedAt: now })
    if (status === 'no_sale') {
      await this.#record({ saleId: sale.id, userId, itemId, outcome: 'service_unavailable', code: null, expiresAt: null, attemptedAt: now })
      throw new ServiceUnavailable('sale_restoring')
    }
    if (status !== 'ok') return this.#refuseCheckout(status, { saleId: sale.id, userId, itemId, attemptedAt: now })

    try {
      await this.#deps.checkoutLog.push({ saleId: sale.id, userId, itemId, outcome: 'accepted', code, expiresAt, attemptedAt: now })
    } catch (error) {
      // Not recorded means not acknowledged: give the item back rather than hold it for nobody.
      await inventory.cancelReservation(sale, code).catch((err: unknown) => this.#deps.log.error({ err }, 'could not cancel an unrecorded reservation'))
      throw error
    }
    return { code, expiresAt, sale, item: sale.catalog[itemId] as CatalogItem }
  }

  /** Records a checkout request that failed validation, then lets the caller refuse it. */
  async recordInvalidCheckout (userId: string | null, itemId: number | null): Promise<void> {
    const now = this.now()
    const sale = this.#current !== null && now < this.#current.endsAt && now >= this.#current.startsAt ? this.#current : null
    await this.#record({ saleId: sale?.id ?? null, userId, itemId, outcome: 'invalid_request', code: null, expiresAt: null, attemptedAt: now })
  }

  async purchase (code: string): Promise<Purchase> {
    const { inventory } = this.#deps
    const now = this.now()
    const sale = await this.currentSale(now).catch(toUnavailable)
    if (sale === null) throw new SaleRefusal(await this.#unknownCodeRefusal(code, null))
    const result = await this.#decide(sale, () => inventory.redeemCode(sale, code, now), (r) => r.status === 'no_sale').catch(toUnavailable)
    if (result.status === 'no_sale') throw new ServiceUnavailable('sale_restoring')
    if (result.status === 'unknown_code') throw new SaleRefusal(await this.#unknownCodeRefusal(code, sale.id))
    if (result.status !== 'ok') throw new SaleRefusal(result.status)

    const item = sale.catalog[result.itemId] as CatalogItem
    this.#purchasing.add(code)
    try {
      const purchaseId = await this.#deps.purchaseLog.push({
        saleId: sale.id, itemId: item.id, userId: result.userId, code, priceCents: item.priceCents, purchasedAt: now
      })
      return { purchaseId, sale, item, userId: result.userId, purchasedAt: now, userPurchases: result.bought }
    } catch (error) {
      // Postgres did not commit it, so it did not happen: the code holds its item again.
      await inventory.undoRedeem(sale, code).catch((err: unknown) => this.#deps.log.error({ err }, 'could not undo an unrecorded purchase'))
      throw error
    } finally {
      this.#purchasing.delete(code)
    }
  }

  /**
   * Gives back items that Redis counts as sold but Postgres never recorded: an instance that
   * redeemed a code and died (SIGKILL, OOM, power loss) before its purchase batch committed
   * leaves such an item, and nobody else would ever undo it, so the sale could never sell out
   * exactly. An item counts as orphaned only once it stayed unrecorded for `settleMs` (longer
   * than a commit in flight on a live instance takes) and this instance is not buying it; its
   * code is then undone as a failed commit would have been (it holds its item again until its
   * own expiry, then the sweep releases it). Run periodically; returns the codes undone.
   */
  async reconcilePurchases (settleMs: number): Promise<number> {
    const { inventory, repository, log } = this.#deps
    const now = this.now()
    const sale = this.#current
    if (sale === null || now < sale.startsAt || now >= sale.endsAt) return 0
    // Redis first, then Postgres: a purchase committed before the Redis read is seen as recorded.
    // Cheap check first: while Postgres holds as many purchases as Redis counts, nothing is orphaned
    // and the item-by-item comparison (a read of the whole items hash) is skipped.
    if ((await inventory.counts(sale)).sold <= await repository.purchaseCount(sale.id)) {
      this.#unrecorded.clear()
      return 0
    }
    const sold = await inventory.soldItems(sale)
    const recorded = await repository.purchasedItems(sale.id)
    const seen = Date.now()
    const unrecorded = new Map<number, number>()
    const orphans: number[] = []
    for (const item of sold) {
      if (recorded.has(item)) continue
      const since = this.#unrecorded.get(item) ?? seen
      unrecorded.set(item, since)
      if (seen - since >= settleMs) orphans.push(item)
    }
    this.#unrecorded = unrecorded
    if (orphans.length === 0) return 0
    let undone = 0
    for (const code of await repository.codesOfItems(sale.id, orphans)) {
      if (!this.#purchasing.has(code) && await inventory.undoRedeem(sale, code)) undone++
    }
    if (undone > 0) log.warn({ saleId: sale.id, items: orphans, undone }, 'undid purchases that Redis held but Postgres never recorded')
    return undone
  }

  /** Sold / held / left of the current sale, or null when no sale is open. */
  async summary (): Promise<SaleSummary | null> {
    const sale = await this.currentSale(this.now()).catch(toUnavailable)
    if (sale === null) return null
    const counts = await this.#decide(sale, () => this.#deps.inventory.counts(sale), (c) => c.items === 0).catch(toUnavailable)
    return { sale, ...counts, left: counts.items - counts.sold - counts.held }
  }

  /** Returns expired reservations of the current sale to stock; run periodically. */
  async releaseExpired (): Promise<number> {
    const now = this.now()
    const sale = this.#current
    if (sale === null || now < sale.startsAt || now >= sale.endsAt) return 0
    return this.#deps.inventory.releaseExpired(sale, now)
  }

  /** Runs one Redis decision; if Redis lost the sale, restores it from Postgres and decides again. */
  async #decide<T> (sale: Sale, decide: () => Promise<T>, saleLost: (result: T) => boolean): Promise<T> {
    const result = await decide()
    if (!saleLost(result)) return result
    await this.restoreHotState(sale)
    return decide()
  }

  /** A code unknown to the current sale: one issued in an earlier hour gets "sale over". */
  async #unknownCodeRefusal (code: string, currentSaleId: number | null): Promise<RefusalCode> {
    const codeSale = await this.#deps.repository.saleOfCode(code).catch(toUnavailable)
    return codeSale !== null && codeSale !== currentSaleId ? 'sale_over' : 'unknown_code'
  }

  async #refuseCheckout (outcome: RefusalCode, attempt: Omit<CheckoutAttempt, 'outcome' | 'code' | 'expiresAt'>): Promise<never> {
    await this.#record({ ...attempt, outcome, code: null, expiresAt: null })
    throw new SaleRefusal(outcome)
  }

  #record (attempt: CheckoutAttempt): Promise<void> {
    return this.#deps.checkoutLog.push(attempt)
  }

  /** A dependency failure mid-checkout is still an attempt: record it, then answer 503. */
  async #orUnavailable<T> (work: Promise<T>, attempt: Omit<CheckoutAttempt, 'outcome' | 'code' | 'expiresAt'>): Promise<T> {
    try {
      return await work
    } catch (error) {
      await this.#record({ ...attempt, outcome: 'service_unavailable', code: null, expiresAt: null })
        .catch((err: unknown) => this.#deps.log.error({ err }, 'could not record a failed checkout attempt'))
      return toUnavailable(error)
    }
  }
}
