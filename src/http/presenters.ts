import type { SaleSummary } from '../sale/service.js'
import type { CatalogItem } from '../sale/sale.js'

/** Cents to currency units for the JSON API (the service computes only in cents). */
export const toPrice = (cents: number): number => cents / 100

export const presentItem = (item: CatalogItem) => ({
  id: item.id,
  name: item.name,
  description: item.description,
  price: toPrice(item.priceCents)
})

export const isoTime = (ms: number): string => new Date(ms).toISOString()

/** A sale's window and live counts, as GET / and the sale page's feed show them. */
export const presentSaleCounts = (summary: SaleSummary) => ({
  id: summary.sale.id,
  opens_at: isoTime(summary.sale.startsAt),
  closes_at: isoTime(summary.sale.endsAt),
  items: summary.items,
  sold: summary.sold,
  held: summary.held,
  left: summary.left
})
