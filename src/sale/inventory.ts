import { readFileSync } from 'node:fs'
import type { RedisClient } from '../redis/client.js'
import type { Sale } from './sale.js'

/**
 * The hot, atomic state of the current sale, in Redis. Every decision is one Lua
 * script (src/sale/lua/*.lua) registered once with `defineCommand`: ioredis sends EVALSHA
 * and, with auto-pipelining, concurrent requests share round trips. (Over 250 lines on purpose:
 * one short method per script, the TypeScript face of each.)
 */

/** Keep Redis keys of a sale a while after it ends so late redemptions get a precise answer. */
const KEY_RETENTION_MS = 3_600_000
/** Expired holds released per batch by a checkout whose user is at the limit (reserve-item.lua). */
const SWEEP_AT_LIMIT = 100
/** Expired holds released per periodic sweep call. */
const SWEEP_BATCH = 1000

export type ReserveStatus =
  | 'ok' | 'no_sale' | 'not_open' | 'no_active_sale' | 'unknown_item' | 'sold_out'
  | 'item_sold' | 'item_reserved' | 'user_limit_reached' | 'rate_limited'

/** A checkout of an item the same user holds already: that hold's code and expiry (ms). */
export type OwnHold = readonly ['already_reserved_by_you', string, string]

/** The per-user abuse limit, counted by the checkout decision itself (no round trip of its own). */
export interface CheckoutRateLimit {
  /** Checkouts a user may try per window; 0 = no limit. */
  max: number
  windowMs: number
}

/** No per-user abuse limit: nothing is counted. */
export const NO_RATE_LIMIT: CheckoutRateLimit = { max: 0, windowMs: 1000 }

/**
 * A decision Redis read past its deadline (lib/deadline.lua) and so did nothing: the service had
 * given up waiting for it, or its estimate of Redis's clock is off.
 */
export class RedisTooLateError extends Error {
  constructor () {
    super('Redis read the decision after its deadline and did nothing')
    this.name = 'RedisTooLateError'
  }
}

/**
 * False when a failed Redis call certainly changed nothing: it was never sent (the client was not
 * connected) or Redis read it past its deadline. Otherwise (a timeout, a connection lost while it
 * was in flight) it may have run, its answer lost.
 */
export const mayHaveRun = (error: unknown): boolean =>
  !(error instanceof RedisTooLateError) && !(error instanceof Error &&
    (error.name === 'RedisUnavailableError' || /^(Stream isn't writeable|Cluster isn't ready)/.test(error.message)))

/** A decision's answer when Redis read it past its deadline, with Redis's time (ms). */
type TooLate = readonly ['too_late', number]
const tooLate = (reply: unknown): reply is TooLate => Array.isArray(reply) && reply[0] === 'too_late'

/** A clock reading slower than this says too little about when Redis read its clock. */
const MAX_CLOCK_ROUND_TRIP_MS = 50

export type RedeemResult =
  | { status: 'ok', itemId: number, userId: string, bought: number }
  | { status: 'no_sale' | 'unknown_code' | 'code_used' | 'code_expired' }

/** The sale's per-user abuse-limit counts (src/sale/lua/lib/rate-limit.lua): one hash, in the sale's slot. */
const rateKey = (sale: Sale): string => `${sale.tag}:rate`

/** How long one instance may hold a sale's rebuild lock (a rebuild takes well under a second). */
const REBUILD_LOCK_MS = 30_000
/** Accepted checkouts replayed per restoreCodes call. */
const RESTORE_CHUNK = 500

export interface SaleCounts { items: number, sold: number, held: number }

/** One accepted checkout as Postgres recorded it, for rebuilding a sale's Redis state. */
export interface AcceptedCheckout { code: string, purchased: boolean, itemId: number, expiresAt: number, userId: string }

type Arg = string | number
interface SaleScripts {
  initSale (...args: Arg[]): Promise<number>
  restoreCodes (...args: Arg[]): Promise<number>
  reserveItem (...args: Arg[]): Promise<ReserveStatus | OwnHold | TooLate>
  redeemCode (...args: Arg[]): Promise<[string, string?, string?, number?] | TooLate>
  undoRedeem (...args: Arg[]): Promise<number>
  voidPurchase (...args: Arg[]): Promise<number>
  cancelReservation (...args: Arg[]): Promise<number>
  releaseExpired (...args: Arg[]): Promise<number>
  saleStats (...args: Arg[]): Promise<[number, number, number]>
}

/** Each script's file, the helper files (src/sale/lua/lib/) prepended to it, and its key count. */
const SCRIPTS: Record<keyof SaleScripts, { file: string, libs: string[], keys: number }> = {
  initSale: { file: 'init-sale.lua', libs: ['sale-keys.lua'], keys: 7 },
  restoreCodes: { file: 'restore-codes.lua', libs: ['sale-keys.lua'], keys: 6 },
  reserveItem: { file: 'reserve-item.lua', libs: ['sale-keys.lua', 'release.lua', 'rate-limit.lua', 'deadline.lua'], keys: 7 },
  redeemCode: { file: 'redeem-code.lua', libs: ['sale-keys.lua', 'release.lua', 'deadline.lua'], keys: 6 },
  undoRedeem: { file: 'undo-redeem.lua', libs: ['sale-keys.lua'], keys: 6 },
  voidPurchase: { file: 'void-purchase.lua', libs: ['sale-keys.lua', 'release.lua'], keys: 6 },
  cancelReservation: { file: 'cancel-reservation.lua', libs: ['sale-keys.lua', 'release.lua'], keys: 6 },
  releaseExpired: { file: 'release-expired.lua', libs: ['sale-keys.lua', 'release.lua'], keys: 6 },
  saleStats: { file: 'sale-stats.lua', libs: ['sale-keys.lua'], keys: 6 }
}

const luaDir = new URL('./lua/', import.meta.url)
const readLua = (file: string): string => readFileSync(new URL(file, luaDir), 'utf8')

/** Registers the sale scripts on a client; call once per client. */
export function defineSaleScripts (redis: RedisClient): void {
  for (const [name, { file, libs, keys }] of Object.entries(SCRIPTS)) {
    const lua = [...libs.map((lib) => readLua(`lib/${lib}`)), readLua(file)].join('\n')
    redis.defineCommand(name, { numberOfKeys: keys, lua })
  }
}

export interface InventoryOptions {
  /** The client's command timeout (REDIS_COMMAND_TIMEOUT_MS): when the service gives up on a decision. */
  commandTimeoutMs?: number
  /** This host's clock (ms), which the deadlines are reckoned from; tests pass one that is off. */
  localClock?: () => number
}

export class Inventory {
  readonly #redis: RedisClient
  readonly #scripts: SaleScripts
  /** How long after it is sent a decision may still be read by Redis: the command timeout, less a margin for the answer's way back. */
  readonly #budgetMs: number
  readonly #local: () => number
  /** Redis's clock minus this host's (ms), for the decisions' deadlines; see syncClock. */
  #offsetMs = 0

  constructor (redis: RedisClient, options: InventoryOptions = {}) {
    this.#redis = redis
    this.#scripts = redis as unknown as SaleScripts
    const timeoutMs = options.commandTimeoutMs ?? 2000
    this.#budgetMs = timeoutMs - Math.min(250, Math.floor(timeoutMs / 4))
    this.#local = options.localClock ?? Date.now
  }

  /**
   * Measures how far Redis's clock is from this host's (at the midpoint of one TIME round trip),
   * which the decisions' deadlines are written in; keeps the last measure when the answer came
   * too slowly to tell. Run every second or so: no decision waits for it.
   */
  async syncClock (): Promise<void> {
    const sent = this.#local()
    const [seconds, micros] = await this.#redis.time()
    const received = this.#local()
    if (received - sent <= MAX_CLOCK_ROUND_TRIP_MS) this.#offsetMs = Math.round(Number(seconds) * 1000 + Number(micros) / 1000 - (sent + received) / 2)
  }

  /**
   * Runs a decision script with its deadline: the moment, by Redis's clock, after which the client
   * will have given up on it (the command timeout, less a margin). Redis does nothing with a
   * decision it reads later (lib/deadline.lua), so one the service answered 503 for never happens
   * behind its back when a stalled Redis resumes. A "too late" that came back quickly cannot be a
   * stall: the estimate of Redis's clock is off; it is corrected from Redis's answer and the
   * decision sent once more. Otherwise it throws RedisTooLateError (a 503: nothing happened).
   */
  async #beforeDeadline<T> (decide: (deadline: number) => Promise<T | TooLate>): Promise<T> {
    for (let tries = 0; ; tries++) {
      const sent = this.#local()
      const reply = await decide(sent + this.#offsetMs + this.#budgetMs)
      if (!tooLate(reply)) return reply
      const received = this.#local()
      if (tries > 0 || received - sent > this.#budgetMs / 2) throw new RedisTooLateError()
      this.#offsetMs = Math.round(Number(reply[1]) - (sent + received) / 2)
    }
  }

  /**
   * True when this Redis holds the sale's hot state and can be trusted with it: its meta exists
   * and was built in the server's current replication history (see sale_lost in lib/sale-keys.lua).
   */
  async isLive (sale: Sale): Promise<boolean> {
    const [items] = await this.#scripts.saleStats(...sale.keys)
    return items > 0
  }

  /** Takes the sale's rebuild lock (SET NX PX); returns false when another instance holds it. */
  async lockRebuild (sale: Sale): Promise<boolean> {
    return await this.#redis.set(`${sale.tag}:rebuild`, String(process.pid), 'PX', REBUILD_LOCK_MS, 'NX') === 'OK'
  }

  async unlockRebuild (sale: Sale): Promise<void> {
    await this.#redis.del(`${sale.tag}:rebuild`)
  }

  /**
   * Replaces the sale's hot state with Postgres's records (caller holds the rebuild lock and
   * the sale is not live, so no decision script runs meanwhile), then publishes the meta. The
   * first restoreCodes call clears what the server had (a promoted replica's copy is stale, not
   * missing) inside the script, and always runs: no key of the sale is ever missing, so this
   * works while the sale's Cluster slot is migrating too (see lib/sale-keys.lua).
   */
  async rebuild (sale: Sale, accepted: AcceptedCheckout[], now: number): Promise<void> {
    const keyExpiry = sale.endsAt + KEY_RETENTION_MS
    for (let i = 0; i === 0 || i < accepted.length; i += RESTORE_CHUNK) {
      const args: Arg[] = []
      for (const c of accepted.slice(i, i + RESTORE_CHUNK)) args.push(c.code, c.purchased ? '1' : '0', c.itemId, c.expiresAt, c.userId)
      await this.#scripts.restoreCodes(...sale.keys, now, keyExpiry, i === 0 ? '1' : '0', ...args)
    }
    const sold = accepted.reduce((n, c) => c.purchased ? n + 1 : n, 0)
    await this.#scripts.initSale(...sale.keys, rateKey(sale), sale.itemCount, sale.userLimit, sale.startsAt, sale.endsAt, keyExpiry, sold)
  }

  /**
   * The checkout decision, which first counts the try against the user's abuse limit: fixed
   * windows aligned on multiples of `windowMs`, counted in one hash per sale (lib/rate-limit.lua).
   */
  reserveItem (sale: Sale, userId: string, itemId: number, code: string, now: number, expiresAt: number, limit = NO_RATE_LIMIT): Promise<ReserveStatus | OwnHold> {
    const windowEnds = now - (now % limit.windowMs) + limit.windowMs
    return this.#beforeDeadline((deadline) => this.#scripts.reserveItem(
      ...sale.keys, rateKey(sale),
      userId, itemId, code, now, expiresAt, SWEEP_AT_LIMIT, sale.endsAt + KEY_RETENTION_MS, limit.max, windowEnds, deadline))
  }

  /** The purchase decision; `redemption` is a fresh random token naming this redemption (see undoRedeem). */
  async redeemCode (sale: Sale, code: string, now: number, redemption: string): Promise<RedeemResult> {
    const [status, itemId, userId, bought] = await this.#beforeDeadline((deadline) => this.#scripts.redeemCode(
      ...sale.keys, code, now, sale.endsAt + KEY_RETENTION_MS, deadline, redemption))
    if (status === 'ok') return { status, itemId: Number(itemId), userId: String(userId), bought: Number(bought) }
    return { status: status as 'no_sale' | 'unknown_code' | 'code_used' | 'code_expired' }
  }

  /** True when Redis holds `code` as a live reservation (state R). */
  async holdsCode (sale: Sale, code: string): Promise<boolean> {
    return (await this.#redis.hget(sale.key.codes, code))?.startsWith('R|') === true
  }

  /**
   * Those of `codes` that Redis holds as redeemed (state P), each with its redemption's token (null
   * for a record without one: written by a rebuild, or by an older version of the service).
   */
  async redemptions (sale: Sale, codes: string[]): Promise<Array<{ code: string, token: string | null }>> {
    if (codes.length === 0) return []
    const records = await this.#redis.hmget(sale.key.codes, ...codes)
    const redeemed: Array<{ code: string, token: string | null }> = []
    codes.forEach((code, i) => {
      const record = records[i]
      if (record?.startsWith('P|') !== true) return
      const token = record.split('|')[4]
      redeemed.push({ code, token: token === undefined || token === '' ? null : token })
    })
    return redeemed
  }

  /** Items Redis counts as sold in this sale (one HGETALL of at most `itemCount` fields). */
  async soldItems (sale: Sale): Promise<number[]> {
    const items = await this.#redis.hgetall(sale.key.items)
    const sold: number[] = []
    for (const [item, holder] of Object.entries(items)) if (holder === 'sold') sold.push(Number(item))
    return sold
  }

  /**
   * Puts a redeemed code back to reserved, if it is still redeemed by `redemption`: call it only
   * once that redemption's purchase can no longer commit.
   */
  async undoRedeem (sale: Sale, code: string, redemption: string): Promise<boolean> {
    return await this.#scripts.undoRedeem(...sale.keys, code, redemption) === 1
  }

  /** Gives back the item of a redeemed code whose purchase Postgres voided. */
  async voidPurchase (sale: Sale, code: string): Promise<boolean> {
    return await this.#scripts.voidPurchase(...sale.keys, code) === 1
  }

  async cancelReservation (sale: Sale, code: string): Promise<boolean> {
    return await this.#scripts.cancelReservation(...sale.keys, code) === 1
  }

  releaseExpired (sale: Sale, now: number): Promise<number> {
    return this.#scripts.releaseExpired(...sale.keys, now, SWEEP_BATCH)
  }

  async counts (sale: Sale): Promise<SaleCounts> {
    const [items, sold, taken] = await this.#scripts.saleStats(...sale.keys)
    return { items, sold, held: taken - sold }
  }
}
