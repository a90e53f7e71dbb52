/**
 * Which sale is open, and its state in Redis: preparing the current and the next hour's sale
 * (Postgres row, then Redis), restoring Redis's state from Postgres when Redis lost it, the
 * decide-then-restore step every Redis decision goes through, and the open sale's counts.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { SaleServiceDeps } from './deps.js'
import { ServiceUnavailable, toUnavailable } from './errors.js'
import type { SaleCounts } from './inventory.js'
import { SaleOutOfOrder } from './repository.js'
import { HOUR_MS, saleWindow, type Sale } from './sale.js'

export interface SaleSummary extends SaleCounts {
  sale: Sale
  left: number
}

/** How long a request waits for another instance's rebuild of a lost sale before a 503. */
const REBUILD_WAIT_MS = 5000
const REBUILD_POLL_MS = 25

export class SaleCalendar {
  readonly #deps: SaleServiceDeps
  /** Prepared sales by start time: the current hour's and, from SALE_PREPARE_SECONDS before it opens, the next. */
  readonly #prepared = new Map<number, Sale>()
  readonly #preparing = new Map<number, Promise<Sale>>()
  readonly #restoring = new Map<number, Promise<void>>()
  /** Hours Postgres refused to open (SaleOutOfOrder): refused from memory from then on, no query per request. */
  readonly #outOfOrder = new Set<number>()

  constructor (deps: SaleServiceDeps) {
    this.#deps = deps
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
      log.error({ err: error, now: new Date(this.#deps.now()) }, 'refused to open a sale whose hour is over: this instance\'s clock is behind')
      throw new ServiceUnavailable('clock_skew', { cause: error })
    })
    if (!await inventory.isLive(sale)) {
      await this.restoreHotState(sale)
      log.info({ saleId: sale.id, opensAt: new Date(startsAt) }, 'sale prepared')
    }
    // Only the current and the next sale stay in memory.
    const currentStart = saleWindow(this.#deps.now()).startsAt
    for (const start of this.#prepared.keys()) if (start < currentStart) this.#prepared.delete(start)
    for (const start of this.#outOfOrder) if (start < currentStart) this.#outOfOrder.delete(start)
    this.#prepared.set(startsAt, sale)
    return sale
  }

  /**
   * What the roll's tick calls (and start-up): the current hour's sale, and the next hour's once
   * `now` is within SALE_PREPARE_SECONDS of its opening. Cheap when both are prepared already.
   */
  async prepareAhead (now: number): Promise<void> {
    this.#deps.clockCheck.assertSound()
    const { startsAt, endsAt } = saleWindow(now)
    await this.prepareSale(startsAt)
    if (endsAt - now <= this.#deps.rules.prepareAheadMs) await this.prepareSale(endsAt)
  }

  /** The next hour's sale once this instance has prepared it (SALE_PREPARE_SECONDS before it opens), else null. */
  preparedNextSale (now: number): Sale | null {
    return this.#prepared.get(saleWindow(now).endsAt) ?? null
  }

  /** The prepared sale open at `now`, if this instance holds it in memory; never touches Postgres. */
  preparedAt (now: number): Sale | null {
    return this.#prepared.get(saleWindow(now).startsAt) ?? null
  }

  /** The sales this instance holds prepared (the current one while it serves, and the next). */
  preparedSales (): Iterable<Sale> {
    return this.#prepared.values()
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
          await inventory.rebuild(sale, accepted, this.#deps.now())
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

  /** Runs one Redis decision; if Redis lost the sale, restores it from Postgres and decides again. */
  async decide<T> (sale: Sale, decide: () => Promise<T>, saleLost: (result: T) => boolean): Promise<T> {
    const result = await decide()
    if (!saleLost(result)) return result
    await this.restoreHotState(sale)
    return decide()
  }

  /** Sold / held / left of the sale open at `now` (the caller's reading of the clock, so what it shows next to it agrees). */
  async summary (now: number): Promise<SaleSummary> {
    const sale = await this.currentSale(now).catch(toUnavailable)
    const counts = await this.decide(sale, () => this.#deps.inventory.counts(sale), (c) => c.items === 0).catch(toUnavailable)
    return { sale, ...counts, left: counts.items - counts.sold - counts.held }
  }
}
