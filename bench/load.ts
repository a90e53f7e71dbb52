/**
 * `npm run load`: an ad-hoc load test of a service that is already running, as a user would run
 * one. A crowd of random users (from a large pool, so neither the per-user rate limit nor the
 * per-user item limit decides) checks out random items of the current sale, over keep-alive
 * connections, as fast as it is answered; with --purchase each code received is bought on the
 * same connection. Prints req/s, latency p50/p99 and the answers by status and `error` code, per
 * kind of request, and warns when the figures measure something else than checkouts (the rate
 * limiter, a sold-out sale, 503s). A client only: it reads nothing but the service's answers.
 *
 *   npm run load -- [--url=http://127.0.0.1:3000] [--connections=100] [--duration=10]
 *                   [--items=N (default: the current sale's, from GET /)] [--users=1000000] [--purchase]
 *
 * Latency runs from the moment autocannon builds a request (just before it writes it) to the end
 * of its answer; a connection's first request also pays for the connect.
 */
import autocannon from 'autocannon'
import { fmt } from './stats.js'

const flag = (name: string, fallback: string): string => process.argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback
const url = flag('url', 'http://127.0.0.1:3000').replace(/\/$/, '')
const connections = Number(flag('connections', '100'))
const duration = Number(flag('duration', '10'))
const users = Number(flag('users', '1000000'))
const purchase = process.argv.includes('--purchase')

interface SaleState { id: number, items: number, sold: number, held: number, left: number }

async function currentSale (): Promise<SaleState | undefined> {
  try {
    const res = await fetch(`${url}/`)
    return res.ok ? (await res.json() as { sale?: SaleState }).sale : undefined
  } catch (err) {
    console.error(`${url} does not answer (${(err as Error).cause ?? (err as Error).message}): start the service first (npm start)`)
    process.exit(1)
  }
}

/** What one kind of request got: answers by status and `error`, and latencies in ms. */
interface Tally { answers: Map<string, number>, latencies: number[] }
const tally = (): Tally => ({ answers: new Map(), latencies: [] })
const record = (t: Tally, status: number, body: string, sentAt: number): void => {
  t.latencies.push(performance.now() - sentAt)
  let key = String(status)
  if (status >= 300) {
    try { key = `${status} ${(JSON.parse(body) as { error?: string }).error ?? ''}`.trim() } catch { /* not JSON */ }
  }
  t.answers.set(key, (t.answers.get(key) ?? 0) + 1)
}

/** What one connection remembers between a request and its answer. */
interface Flow { sentAt?: number, code?: string }

const before = await currentSale()
const items = Number(flag('items', String(before?.items ?? 10_000)))
const checkouts = tally()
const purchases = tally()
console.log(`load: ${url}, ${connections} connections, ${duration} s: POST /checkout by random users of ${fmt(users)} ` +
  `for random items of 1..${fmt(items)}${purchase ? ', then POST /purchase of each code received' : ''}`)
if (before) console.log(`sale #${before.id} before: ${fmt(before.items)} items, ${fmt(before.sold)} sold, ${fmt(before.held)} held, ${fmt(before.left)} left`)

const checkout: autocannon.Request = {
  method: 'POST',
  setupRequest: (req, ctx) => {
    (ctx as Flow).sentAt = performance.now()
    return { ...req, path: `/checkout?user_id=load${Math.floor(Math.random() * users)}&id=${1 + Math.floor(Math.random() * items)}` }
  },
  onResponse: (status, body, ctx) => {
    const flow = ctx as Flow
    record(checkouts, status, body, flow.sentAt as number)
    if (status === 200) flow.code = (JSON.parse(body) as { code: string }).code
  }
}
// Without a code (the checkout was refused) autocannon skips this request and starts over with a checkout.
const buy: autocannon.Request = {
  method: 'POST',
  setupRequest: (req, ctx) => {
    const flow = ctx as Flow
    flow.sentAt = performance.now()
    return flow.code ? { ...req, path: `/purchase?code=${flow.code}` } : null as unknown as typeof req
  },
  onResponse: (status, body, ctx) => record(purchases, status, body, (ctx as Flow).sentAt as number)
}

const result = await autocannon({ url, connections, duration, requests: purchase ? [checkout, buy] : [checkout] })

const percentile = (xs: number[], q: number): string => {
  if (xs.length === 0) return '-'
  const sorted = [...xs].sort((a, b) => a - b)
  return (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number).toFixed(1)
}
console.log('\n| request | answered | req/s | p50 ms | p99 ms | answers by status and error |\n|---|---:|---:|---:|---:|---|')
for (const [name, t] of [['checkout', checkouts], ['purchase', purchases]] as const) {
  if (name === 'purchase' && !purchase) continue
  const answers = [...t.answers].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}: ${fmt(v)}`).join(', ')
  console.log(`| ${name} | ${fmt(t.latencies.length)} | ${fmt(Math.round(t.latencies.length / result.duration))} | ` +
    `${percentile(t.latencies, 0.5)} | ${percentile(t.latencies, 0.99)} | ${answers || '-'} |`)
}
console.log(`all: ${fmt(Math.round(result.requests.average))} req/s over ${result.duration} s; ` +
  `${fmt(result.errors)} connection errors, ${fmt(result.timeouts)} timeouts (requests unanswered within 10 s)`)

const after = await currentSale().catch(() => undefined)
if (after) console.log(`sale #${after.id} after: ${fmt(after.sold)} sold, ${fmt(after.held)} held, ${fmt(after.left)} left`)

// Figures that measured something else than checkouts.
const answered = checkouts.latencies.length
const share = (pattern: RegExp) => [...checkouts.answers].filter(([k]) => pattern.test(k)).reduce((n, [, v]) => n + v, 0) / Math.max(answered, 1)
const warnings = [
  [share(/^429/), 'were 429 rate_limited: this measured the rate limiter (per user: --users is too small; per IP, when RATE_LIMIT_PER_IP or TRUST_PROXY is set: every request comes from this one address)'],
  [share(/item_sold|sold_out/), 'found the items sold: this measured refusals of a sold-out sale (wait for the next hour\'s sale)'],
  [share(/^503/), 'were 503: the service is degraded (see GET /health)'],
  [share(/user_limit_reached/), 'were user_limit_reached: --users is too small for this load']
] as const
for (const [part, what] of warnings) {
  if (part > 0.1) console.log(`WARNING: ${Math.round(part * 100)}% of checkouts ${what}`)
}
