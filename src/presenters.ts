import type { CatalogItem } from './sale.js'

/** Cents to currency units for the JSON API (the service computes only in cents). */
export const toPrice = (cents: number): number => cents / 100

export const presentItem = (item: CatalogItem) => ({
  id: item.id,
  name: item.name,
  description: item.description,
  price: toPrice(item.priceCents)
})

export const isoTime = (ms: number): string => new Date(ms).toISOString()
