/**
 * The sell-out: checkout then purchase until every item is sold. The crowd shares what it has
 * learned, as buyers refreshing a listing would: it tries each item once in a random order, never
 * again once seen sold; an item refused for another reason goes back in the queue. With nothing
 * left to try (every unsold item is held by one of its own connections, about to buy it) a
 * connection asks GET /health instead of an item it knows is taken. The service's own answers
 * decide everything. If a new sale appears (XX:00 passed), the crowd starts over on it.
 */
import { meterFor, startService } from '../launch.js'
import { bump, countRefusal, listenOverflows, row, run, saleOf, type Row } from '../measure.js'
import { SELLOUT_CONNECTIONS, SELLOUT_ITEMS, SELLOUT_MAX_S, SELLOUT_TTL_S } from '../options.js'
import { rssMb, stop } from '../processes.js'
import { fmt } from '../stats.js'
import { expectation, type Expectation } from '../verify.js'

/** What one autocannon connection remembers between its checkout and its purchase. */
interface Flow { item?: number, code?: string, epoch?: number }

export async function sellout (): Promise<{ row: Row, expect: Expectation }> {
  // A connection that fails between its checkout and its purchase (autocannon then starts the
  // flow over, the code lost) abandons its reservation, as a real buyer may: with the default
  // 10-minute TTL the item would stay held past the bench's window. Abandoned holds here expire
  // after a few seconds, so the sale sells out exactly whatever the client's luck.
  const service = await startService('sellout', SELLOUT_ITEMS, { CHECKOUT_TTL_SECONDS: String(SELLOUT_TTL_S) })
  const refusals: Record<string, number> = {}
  const expect = expectation(service, SELLOUT_CONNECTIONS, true)
  const shuffled = () => Array.from({ length: SELLOUT_ITEMS }, (_, i) => i + 1).sort(() => Math.random() - 0.5)
  /** Knowledge of the crowd about the current sale; `epoch` counts sales seen. */
  let epoch = 0
  let saleId = NaN
  let queue = shuffled()
  let cursor = 0
  let sold = new Set<number>()
  /** Items one of the crowd's connections holds -> since when (an abandoned hold expires after the TTL). */
  let held = new Map<number, number>()
  let soldOutAt = 0
  const newSale = (id: number) => {
    epoch++
    saleId = id
    queue = shuffled()
    cursor = 0
    sold = new Set()
    held = new Map()
  }
  /** An item nobody of the crowd is known to hold or to have bought; a hold older than the TTL counts as abandoned (its connection failed). */
  const anyFree = (): number | undefined => {
    const now = Date.now()
    for (let tries = 0; tries < 20; tries++) {
      const item = 1 + Math.floor(Math.random() * SELLOUT_ITEMS)
      if (sold.has(item)) continue
      const since = held.get(item)
      if (since === undefined || now - since > SELLOUT_TTL_S * 1000) return item
    }
    return undefined
  }
  try {
    const idle = rssMb(service.child.pid as number, 'VmRSS')
    console.log(`\n▶ sell-out: checkout + purchase of ${fmt(SELLOUT_ITEMS)} items, ${fmt(SELLOUT_CONNECTIONS)} connections, until sold out (at most ${SELLOUT_MAX_S} s)`)
    const meter = meterFor(service.child)
    meter.start()
    const overflowsBefore = listenOverflows()
    const started = Date.now()
    const { instance, done } = run({
      url: service.url,
      connections: SELLOUT_CONNECTIONS,
      duration: SELLOUT_MAX_S,
      requests: [
        {
          method: 'POST',
          setupRequest: (req, ctx) => {
            const context = ctx as Flow
            context.epoch = epoch
            let item: number | undefined
            // Skipped: items seen sold, and items a connection of the crowd holds (if its purchase
            // fails the item comes back in the queue).
            while (cursor < queue.length && item === undefined) {
              const next = queue[cursor++] as number
              if (!sold.has(next) && !held.has(next)) item = next
            }
            item ??= anyFree()
            context.item = item
            if (item === undefined) return { ...req, method: 'GET', path: '/health' }
            expect.checkoutsSent++
            return { ...req, path: `/checkout?user_id=u${Math.floor(Math.random() * 5000)}&id=${item}` }
          },
          onResponse: (status, body, ctx) => {
            const context = ctx as Flow
            if (context.item === undefined) return
            if (status === 200) {
              const id = saleOf(body)
              bump(expect.acceptedBySale, id)
              if (Number.isNaN(saleId)) saleId = id
              else if (id !== saleId && context.epoch === epoch) newSale(id)
              context.code = (JSON.parse(body) as { code: string }).code
              held.set(context.item, Date.now())
              return
            }
            countRefusal(refusals, status, body)
            if (context.epoch !== epoch) return // an answer about the previous sale
            if (/item_sold|sold_out/.test(body)) sold.add(context.item)
            else queue.push(context.item) // reserved (may expire), limit, 503
          }
        },
        {
          method: 'POST',
          setupRequest: (req, ctx) => {
            const { code } = ctx as Flow
            return code ? { ...req, path: `/purchase?code=${code}` } : null as unknown as typeof req
          },
          onResponse: (status, body, ctx) => {
            const context = ctx as Flow
            const item = context.item as number
            if (context.epoch === epoch) held.delete(item)
            if (status !== 200) {
              countRefusal(refusals, status, body)
              if (context.epoch === epoch) queue.push(item)
              return
            }
            const id = saleOf(body)
            const soldInSale = (expect.soldBySale.get(id) ?? 0) + 1
            expect.soldBySale.set(id, soldInSale)
            if (id === saleId) sold.add(item)
            if (soldInSale === SELLOUT_ITEMS) {
              expect.soldOutSale = id
              soldOutAt = Date.now()
              instance.stop()
            }
          }
        }
      ]
    }, false) // autocannon would announce its 60 s cap as the run's length: the real one is printed below
    const result = await done
    const cpu = meter.perRequest(result.requests.total)
    const seconds = soldOutAt ? (soldOutAt - started) / 1000 : NaN
    console.log(soldOutAt
      ? `  sold out in ${seconds.toFixed(1)} s (${fmt(result.requests.total)} requests)`
      : `  did NOT sell out within ${SELLOUT_MAX_S} s (${fmt(result.requests.total)} requests)`)
    const peak = rssMb(service.child.pid as number)
    return { row: row('sell-out checkout+purchase', result, refusals, cpu, { idle, peak }, { sellOutSeconds: seconds, listenOverflows: listenOverflows() - overflowsBefore }), expect }
  } finally {
    await stop(service.child)
  }
}
