/** One hourly sale as the service holds it in memory while the sale is current. */
export interface Sale {
  id: number
  startsAt: number
  endsAt: number
  itemCount: number
  userLimit: number
  /** Redis hash tag `{sale:<id>:<token>}`: the random token ties Redis state to this Postgres row. */
  tag: string
  /** The six Redis keys of this sale by name (src/sale/lua/lib/sale-keys.lua names them the same). */
  key: SaleKeys
  /** The same six keys in the order every Lua script takes them as KEYS. */
  keys: readonly string[]
  /** Catalog indexed by item id; index 0 is unused. */
  catalog: readonly (CatalogItem | undefined)[]
}

export interface CatalogItem {
  id: number
  name: string
  description: string
  /** Price in cents: money is never a float inside the service. */
  priceCents: number
}

export const HOUR_MS = 3_600_000

/** The UTC hour that contains `now`: the window of the sale that is open at that instant. */
export function saleWindow (now: number): { startsAt: number, endsAt: number } {
  const startsAt = now - (now % HOUR_MS)
  return { startsAt, endsAt: startsAt + HOUR_MS }
}

/** The Redis hash tag of a sale: keeps its keys on one Redis Cluster slot and apart from any other database's sale of the same id. */
export const saleTag = (saleId: number, token: string): string => `{sale:${saleId}:${token}}`

/** A sale's keys, in the order of the scripts' KEYS (lib/sale-keys.lua: META, ITEMS, CODES, USERS, BOUGHT, EXPIRY). */
const SALE_KEY_NAMES = ['meta', 'items', 'codes', 'users', 'bought', 'expiry'] as const
export type SaleKeys = Readonly<Record<typeof SALE_KEY_NAMES[number], string>>

/** One sale's keys by name, all under its hash tag. */
export const namedSaleKeys = (tag: string): SaleKeys =>
  Object.fromEntries(SALE_KEY_NAMES.map((name) => [name, `${tag}:${name}`])) as Record<typeof SALE_KEY_NAMES[number], string>

/** One sale's keys in the order of the scripts' KEYS. */
export const saleKeys = (tag: string): string[] => SALE_KEY_NAMES.map((name) => `${tag}:${name}`)
