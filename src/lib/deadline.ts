/**
 * `work`, or a rejection once `ms` passed without an answer: what reads for humans and
 * monitors (/health, /metrics, the sale page) use so a hanging dependency cannot hang them.
 * The work itself is not cancelled; its late result is ignored.
 */
export function withDeadline<T> (work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    work,
    new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms) })
  ]).finally(() => clearTimeout(timer))
}
