import { readFileSync } from 'node:fs'
import type { Redis } from 'ioredis'
import type { Sale } from './sale.js'

/**
 * The hot, atomic state of the current sale, in Redis. Every decision is one Lua
 * script (src/lua/*.lua) registered once with `defineCommand`: ioredis sends EVALSHA
 * and, with auto-pipelining, concurrent requests share round trips.
 */

/** Keep Redis keys of a sale a while after it ends so late redemptions get a precise answer. */
const KEY_RETENTION_MS = 3_600_000
/** Expired holds swept by a checkout before it decides: bounded so one call stays O(1)-ish. */
const SWEEP_ON_CHECKOUT = 20
/** Expired holds released per periodic sweep call. */
const SWEEP_BATCH = 1000

export type ReserveStatus =
  | 'ok' | 'no_sale' | 'no_active_sale' | 'unknown_item' | 'sold_out'
  | 'item_sold' | 'item_reserved' | 'user_limit_reached'

export type RedeemResult =
  | { status: 'ok', itemId: number, userId: string, bought: number }
  | { status: 'unknown_code' | 'code_used' | 'code_expired' }

export interface SaleCounts { items: number, sold: number, held: number }

type Arg = string | number
interface SaleScripts {
  initSale (...args: Arg[]): Promise<number>
  reserveItem (...args: Arg[]): Promise<ReserveStatus>
  redeemCode (...args: Arg[]): Promise<[string, string?, string?, number?]>
  undoRedeem (...args: Arg[]): Promise<number>
  cancelReservation (...args: Arg[]): Promise<number>
  releaseExpired (...args: Arg[]): Promise<number>
  saleStats (...args: Arg[]): Promise<[number, number, number]>
}

const SCRIPTS: Record<keyof SaleScripts, { file: string, usesReleaseLib: boolean }> = {
  initSale: { file: 'init-sale.lua', usesReleaseLib: false },
  reserveItem: { file: 'reserve-item.lua', usesReleaseLib: true },
  redeemCode: { file: 'redeem-code.lua', usesReleaseLib: true },
  undoRedeem: { file: 'undo-redeem.lua', usesReleaseLib: true },
  cancelReservation: { file: 'cancel-reservation.lua', usesReleaseLib: true },
  releaseExpired: { file: 'release-expired.lua', usesReleaseLib: true },
  saleStats: { file: 'sale-stats.lua', usesReleaseLib: false }
}

const luaDir = new URL('./lua/', import.meta.url)
const readLua = (file: string): string => readFileSync(new URL(file, luaDir), 'utf8')

/** Registers the sale scripts on a client; call once per client. */
export function defineSaleScripts (redis: Redis): void {
  const releaseLib = readLua('lib/release.lua')
  for (const [name, { file, usesReleaseLib }] of Object.entries(SCRIPTS)) {
    const body = readLua(file)
    redis.defineCommand(name, { numberOfKeys: 6, lua: usesReleaseLib ? `${releaseLib}\n${body}` : body })
  }
}

export class Inventory {
  readonly #scripts: SaleScripts

  constructor (redis: Redis) {
    this.#scripts = redis as unknown as SaleScripts
  }

  /** Seeds the sale's counters unless they exist; returns true when this call seeded. */
  async initSale (sale: Sale): Promise<boolean> {
    const seeded = await this.#scripts.initSale(
      ...sale.keys, sale.itemCount, sale.userLimit, sale.endsAt, sale.endsAt + KEY_RETENTION_MS)
    return seeded === 1
  }

  reserveItem (sale: Sale, userId: string, itemId: number, code: string, now: number, expiresAt: number): Promise<ReserveStatus> {
    return this.#scripts.reserveItem(
      ...sale.keys, userId, itemId, code, now, expiresAt, SWEEP_ON_CHECKOUT, sale.endsAt + KEY_RETENTION_MS)
  }

  async redeemCode (sale: Sale, code: string, now: number): Promise<RedeemResult> {
    const [status, itemId, userId, bought] = await this.#scripts.redeemCode(
      ...sale.keys, code, now, sale.endsAt + KEY_RETENTION_MS)
    if (status === 'ok') return { status, itemId: Number(itemId), userId: String(userId), bought: Number(bought) }
    return { status: status as 'unknown_code' | 'code_used' | 'code_expired' }
  }

  async undoRedeem (sale: Sale, code: string): Promise<boolean> {
    return await this.#scripts.undoRedeem(...sale.keys, code) === 1
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
