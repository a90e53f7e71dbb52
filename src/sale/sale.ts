/** One hourly sale as the service holds it in memory while the sale is current. */
export interface Sale {
  id: number
  startsAt: number
  endsAt: number
  itemCount: number
  userLimit: number
  /** Redis hash tag `{sale:<id>:<token>}`: the random token ties Redis state to this Postgres row. */
  tag: string
  /** The six Redis keys of this sale, in the order every Lua script expects (see src/sale/lua/lib/release.lua). */
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

/** Key names for one sale, all under its hash tag. */
export function saleKeys (tag: string): string[] {
  return ['meta', 'items', 'codes', 'users', 'bought', 'expiry'].map((name) => `${tag}:${name}`)
}
