/**
 * Checkout: a hold on one item for one user, decided in Redis, answered with a checkout code.
 * Every checkout is an attempt row, refusals and failures included: recorded through the attempt
 * writer, or the spool when Postgres cannot take it, which settleSpooled later writes back.
 */
import { newAttemptId } from '../lib/attempt-id.js'
import { random16 } from '../lib/random-pool.js'
import { refusedRow } from '../db/pg-errors.js'
import type { SaleCalendar } from './calendar.js'
import type { SaleServiceDeps } from './deps.js'
import { RateLimited, SaleRefusal, ServiceUnavailable, toUnavailable, type RefusalCode } from './errors.js'
import type { CheckoutAttempt } from './record-writers.js'
import type { AbandonedDecisions } from './repair.js'
import type { CatalogItem, Sale } from './sale.js'

export interface Reservation {
  code: string
  expiresAt: number
  sale: Sale
  item: CatalogItem
}

/** An attempt before its outcome is known. */
type PendingAttempt = Omit<CheckoutAttempt, 'outcome' | 'code' | 'expiresAt'>

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

export class Checkout {
  readonly #deps: SaleServiceDeps
  readonly #calendar: SaleCalendar
  readonly #abandoned: AbandonedDecisions

  constructor (deps: SaleServiceDeps, calendar: SaleCalendar, abandoned: AbandonedDecisions) {
    this.#deps = deps
    this.#calendar = calendar
    this.#abandoned = abandoned
  }

  async checkout (userId: string, itemId: number): Promise<Reservation> {
    const { inventory, rules } = this.#deps
    const now = this.#deps.now()
    const attemptId = newAttemptId()
    const sale = await this.#orUnavailable(this.#calendar.currentSale(now), { attemptId, saleId: null, saleStartsAt: null, userId, itemId, attemptedAt: now })
    const attempt = { attemptId, saleId: sale.id, saleStartsAt: sale.startsAt, userId, itemId, attemptedAt: now }
    const code = newCheckoutCode()
    const expiresAt = Math.min(now + rules.checkoutTtlMs, sale.endsAt)
    const status = await this.#orUnavailable(
      this.#calendar.decide(sale, () => inventory.reserveItem(sale, userId, itemId, code, now, expiresAt, rules.checkoutRateLimit), (s) => s === 'no_sale')
        .catch((error: unknown) => this.#abandoned.abandon(error, { sale, code, kind: 'hold', expiresAt })),
      attempt)
    if (status === 'no_sale') {
      await this.#record({ ...attempt, outcome: 'service_unavailable', code: null, expiresAt: null })
      throw new ServiceUnavailable('sale_restoring')
    }
    if (status === 'not_open') return this.#refuse(notOpenYet(sale, now), attempt)
    // An abuse-limited try costs no attempt row: a loop hammering one id is what the limit stops.
    if (status === 'rate_limited') throw this.#rateLimited(now)
    if (typeof status !== 'string') {
      const [refusal, heldCode, heldUntil] = status
      return this.#refuse(new SaleRefusal(refusal, { hold: { code: heldCode, expiresAt: Number(heldUntil) } }), attempt)
    }
    if (status !== 'ok') return this.#refuse(status, attempt)

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
      await this.#calendar.restoreHotState(sale)
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
  async recordRefused (userId: string | null, itemId: number | null, outcome: 'invalid_request' | 'service_unavailable'): Promise<void> {
    const now = this.#deps.now()
    const sale = this.#calendar.preparedAt(now)
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
    const now = this.#deps.now()
    const held = attempts.filter((a) => a.code !== null && a.expiresAt !== null && a.expiresAt > now)
    if (held.length === 0) return
    // Sales this instance holds (the current one while it serves): a code of an earlier sale
    // expired with it.
    for (const sale of this.#calendar.preparedSales()) {
      const codes = held.filter((a) => a.saleId === sale.id)
      if (codes.length === 0) continue
      await this.#calendar.restoreHotState(sale)
      for (const attempt of codes) await inventory.cancelReservation(sale, attempt.code as string)
    }
  }

  async #refuse (refusal: RefusalCode | SaleRefusal, attempt: PendingAttempt): Promise<never> {
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
  async #orUnavailable<T> (work: Promise<T>, attempt: PendingAttempt): Promise<T> {
    try {
      return await work
    } catch (error) {
      // If Postgres cannot take the row either, the spool has it.
      await this.#record({ ...attempt, outcome: 'service_unavailable', code: null, expiresAt: null }).catch(() => {})
      return toUnavailable(error)
    }
  }
}
