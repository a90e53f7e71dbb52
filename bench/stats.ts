/** How the bench summarises and shows its numbers. */

/** The median, which repeated runs are summarised by: one burst of the shared host's other load cannot move it far. */
export const median = (xs: number[]): number => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  if (sorted.length === 0) return NaN
  return sorted.length % 2 === 1 ? sorted[mid] as number : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

/** Digits grouped; '-' for a figure that was not measured. */
export const fmt = (n: number): string => Number.isFinite(n) ? n.toLocaleString('en-US') : '-'
