import pg from 'pg'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import { withDeadline } from '../lib/deadline.js'
import type { ClockSkew } from '../redis/clock.js'
import { ServiceUnavailable, UNAVAILABLE, type UnavailableReason } from '../sale/errors.js'
import { CHECKOUT_OUTCOMES, type CheckoutAttempt, type PurchaseRecord } from '../sale/record-writers.js'
import { saleWindow } from '../sale/sale.js'
import type { SaleSummary } from '../sale/service.js'

/**
 * The service's Prometheus metrics (prom-client): what they count and how; plugins/metrics.ts
 * registers them on the app and feeds them from its hooks. (Over 250 lines on purpose: one
 * registry, each metric declared beside the one method that feeds it.)
 */
export const METRICS_PREFIX = 'flash_sale_'

/** The group-commit writers, named after the table each fills. */
export type WriterName = 'checkout_attempts' | 'purchases'

/** What BatchWriter's `onFlush` reports after each batch. */
export interface FlushInfo { rows: number, ms: number, error?: unknown }

/** Why a request was answered 503: the failing dependency when it can be told, else the service's own reason. */
export type UnavailableCause = 'redis' | 'postgres' | UnavailableReason
const UNAVAILABLE_CAUSES = ['redis', 'postgres', ...Object.keys(UNAVAILABLE)] as UnavailableCause[]

/** Route label of requests no route matched: one value whatever the URL, so 404 floods cannot grow the series. */
export const UNMATCHED_ROUTE = 'unmatched'

/**
 * prom-client's default gauges whose names end in `_total`, which the Prometheus conventions keep
 * for counters (`promtool check metrics` warns on them). Each is the sum of a per-`type` gauge
 * that stays (`nodejs_active_handles` ...): `sum(nodejs_active_handles)` is the same number.
 */
const TOTAL_NAMED_GAUGES = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']

const HTTP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const FLUSH_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
/** A scrape never waits longer than this for the sale's counts (Redis may be hanging). */
const SUMMARY_DEADLINE_MS = 1000

/** The dependency behind an error, if it is recognizably Redis's or Postgres's. */
function dependencyOf (error: Error, ports: { redis: number, postgres: number }): 'redis' | 'postgres' | null {
  if (error instanceof pg.DatabaseError) return 'postgres'
  if (['ReplyError', 'MaxRetriesPerRequestError', 'RedisUnavailableError', 'RedisTooLateError', 'ClusterAllFailedError'].includes(error.name)) return 'redis'
  // ioredis's own failures are plain Errors with fixed messages (a Cluster's and Sentinel's
  // included); so are pg's client-side ones.
  if (/^(Connection is closed|Command timed out|Stream isn't writeable|Cluster isn't ready|All sentinels are unreachable)/.test(error.message)) return 'redis'
  if (/^(Connection terminated|timeout exceeded when trying to connect|Query read timeout|Client has encountered a connection error|Cannot use a pool after calling end)/.test(error.message)) return 'postgres'
  // Socket errors (ECONNREFUSED, ECONNRESET, ...) name the port they failed on.
  const port = (error as Error & { port?: unknown }).port
  if (port === ports.redis && port !== ports.postgres) return 'redis'
  if (port === ports.postgres && port !== ports.redis) return 'postgres'
  return null
}

/** Why the service answered 503: the dependency in the error's cause chain, else the error's own reason. */
export function unavailableCause (error: ServiceUnavailable, ports: { redis: number, postgres: number }): UnavailableCause {
  for (let cause: unknown = error.cause, depth = 0; cause instanceof Error && depth < 5; cause = cause.cause, depth++) {
    const dependency = dependencyOf(cause, ports)
    if (dependency !== null) return dependency
  }
  return error.reason
}

export const portOf = (url: string, fallback: number): number => {
  try {
    const port = new URL(url).port
    return port === '' ? fallback : Number(port)
  } catch {
    return fallback
  }
}

export interface AppMetricsOptions {
  ports: { redis: number, postgres: number }
  /** The current sale's counts; read at scrape time. */
  summary: () => Promise<SaleSummary | null>
  /** Rows waiting in each group-commit writer; read at scrape time. */
  queued: () => Record<WriterName, number>
  /** The service's clock and whether this instance has prepared the next hour's sale; read at scrape time. */
  nextSale: () => { now: number, prepared: boolean }
  /** The last comparison of the clocks (src/redis/clock.ts); null for an injected clock. Read at scrape time. */
  clockSkew?: () => ClockSkew | null
}

/**
 * The app's Prometheus metrics, on a Registry of its own (tests build many apps in one process;
 * the global registry would mix them up and refuse duplicate names). Nothing here runs per
 * request except `observeRequest`; the sale and queue gauges are computed when scraped.
 */
export class AppMetrics {
  readonly registry = new Registry()
  readonly #requests: Histogram<'route' | 'method' | 'status_code'>
  readonly #attempts: Counter<'outcome'>
  readonly #purchases: Counter
  readonly #flushSeconds: Histogram<'writer'>
  readonly #batchRows: Counter<'writer'>
  readonly #batchFailures: Counter<'writer'>
  readonly #unavailable: Counter<'cause'>
  readonly #dependencyErrors: Counter<'dependency'>
  readonly #ports: { redis: number, postgres: number }
  #attemptsTotal = 0
  #acceptedTotal = 0

  constructor (opts: AppMetricsOptions) {
    const registers = [this.registry]
    const p = METRICS_PREFIX
    this.#ports = opts.ports
    // Unprefixed: the standard process_* and nodejs_* names that Node.js dashboards query.
    collectDefaultMetrics({ register: this.registry })
    for (const name of TOTAL_NAMED_GAUGES) this.registry.removeSingleMetric(name)
    // About 0.8 µs an observation (prom-client hashes the labels each time): ~1% of a core at 15k req/s.
    this.#requests = new Histogram({
      name: `${p}http_request_duration_seconds`,
      help: 'HTTP request duration in seconds, by route pattern (`unmatched` for no route), method and status code',
      labelNames: ['route', 'method', 'status_code'],
      buckets: HTTP_BUCKETS,
      registers
    })

    this.#attempts = new Counter({
      name: `${p}checkout_attempts_total`,
      help: 'Checkout attempts committed to Postgres (rows of checkout_attempts), by outcome',
      labelNames: ['outcome'],
      registers
    })
    // Pre-set to 0 so each outcome's series exists from the start.
    for (const outcome of CHECKOUT_OUTCOMES) this.#attempts.inc({ outcome }, 0)
    this.#purchases = new Counter({
      name: `${p}purchases_total`,
      help: 'Purchases committed to Postgres (rows of purchases; a batch whose commit was not confirmed to the service is not counted)',
      registers
    })

    this.registry.registerMetric(new Gauge({
      name: `${p}sale_items`,
      help: 'Items of the current sale by state: sold, held (live checkout codes) or left; absent when no sale is open or its counts are unavailable',
      labelNames: ['state'],
      registers: [],
      async collect () {
        const summary = await withDeadline(opts.summary(), SUMMARY_DEADLINE_MS).catch(() => null)
        this.reset()
        if (summary === null) return
        this.set({ state: 'sold' }, summary.sold)
        this.set({ state: 'held' }, summary.held)
        this.set({ state: 'left' }, summary.left)
      }
    }))
    this.registry.registerMetric(new Gauge({
      name: `${p}batch_queue_depth`,
      help: 'Rows waiting in a group-commit writer for their batch',
      labelNames: ['writer'],
      registers: [],
      collect () {
        for (const [writer, rows] of Object.entries(opts.queued())) this.set({ writer }, rows)
      }
    }))
    this.registry.registerMetric(new Gauge({
      name: `${p}next_sale_prepared`,
      help: '1 once this instance has prepared the next hour\'s sale (from SALE_PREPARE_SECONDS before it opens), else 0',
      registers: [],
      collect () { this.set(opts.nextSale().prepared ? 1 : 0) }
    }))
    this.registry.registerMetric(new Gauge({
      name: `${p}next_sale_opens_in_seconds`,
      help: 'Seconds until the next hour\'s sale opens, by the service\'s clock',
      registers: [],
      collect () {
        const { now } = opts.nextSale()
        this.set((saleWindow(now).endsAt - now) / 1000)
      }
    }))
    const clockSkew = opts.clockSkew ?? (() => null)
    this.registry.registerMetric(new Gauge({
      name: `${p}clock_skew_seconds`,
      help: 'The sale clock\'s source (Redis\'s TIME, or this host\'s clock with CLOCK_SOURCE=local) minus another clock, at the last ' +
        'comparison: `host` (this host\'s clock; Redis source only), `postgres` (Postgres\'s clock_timestamp()), `sale_clock` (the clock ' +
        'this instance decides by: not 0 while it refuses to follow a jump of its source, or waits for a source that stepped back). ' +
        'Beyond CLOCK_SKEW_MAX_MS either way, decisions are refused (503 clock_skew)',
      labelNames: ['against'],
      registers: [],
      collect () {
        this.reset()
        for (const [against, ms] of Object.entries(clockSkew()?.againstMs ?? {})) this.set({ against }, ms / 1000)
      }
    }))
    this.registry.registerMetric(new Gauge({
      name: `${p}clock_skew_refusing`,
      help: '1 while sale decisions are refused (503 clock_skew) because the clocks disagree by more than CLOCK_SKEW_MAX_MS, else 0',
      registers: [],
      collect () {
        this.set(clockSkew()?.refusing === true ? 1 : 0)
      }
    }))
    this.#flushSeconds = new Histogram({
      name: `${p}batch_flush_duration_seconds`,
      help: 'Duration of one group-commit batch INSERT (committed or failed), by writer',
      labelNames: ['writer'],
      buckets: FLUSH_BUCKETS,
      registers
    })
    this.#batchRows = new Counter({
      name: `${p}batch_rows_total`,
      help: 'Rows committed by a group-commit writer',
      labelNames: ['writer'],
      registers
    })
    this.#batchFailures = new Counter({
      name: `${p}batch_failures_total`,
      help: 'Batches whose INSERT failed (none of their requests was acknowledged), by writer',
      labelNames: ['writer'],
      registers
    })
    for (const writer of ['checkout_attempts', 'purchases'] as const) {
      this.#batchRows.inc({ writer }, 0)
      this.#batchFailures.inc({ writer }, 0)
    }

    this.#unavailable = new Counter({
      name: `${p}unavailable_responses_total`,
      help: 'Requests answered 503 service_unavailable, by cause',
      labelNames: ['cause'],
      registers
    })
    for (const cause of UNAVAILABLE_CAUSES) this.#unavailable.inc({ cause }, 0)
    this.#dependencyErrors = new Counter({
      name: `${p}dependency_errors_total`,
      help: 'Connection error events: the Redis client\'s "error" events and the pg pool\'s "error" events (an idle connection lost)',
      labelNames: ['dependency'],
      registers
    })
    for (const dependency of ['redis', 'postgres']) this.#dependencyErrors.inc({ dependency }, 0)
  }

  /** The one per-request call (from an onResponse hook). */
  observeRequest (route: string | undefined, method: string, statusCode: number, ms: number): void {
    this.#requests.observe({ route: route ?? UNMATCHED_ROUTE, method, status_code: statusCode }, ms / 1000)
  }

  /**
   * Wraps the checkout-attempt batch write: once a batch has committed, its rows are counted by
   * outcome, so the counter equals the rows of checkout_attempts (per batch, not per request).
   */
  countCommittedAttempts<R> (write: (rows: CheckoutAttempt[]) => Promise<R[]>): (rows: CheckoutAttempt[]) => Promise<R[]> {
    return async (rows) => {
      const results = await write(rows)
      const byOutcome = new Map<string, number>()
      for (const row of rows) byOutcome.set(row.outcome, (byOutcome.get(row.outcome) ?? 0) + 1)
      for (const [outcome, n] of byOutcome) this.#attempts.inc({ outcome }, n)
      this.#attemptsTotal += rows.length
      this.#acceptedTotal += byOutcome.get('accepted') ?? 0
      return results
    }
  }

  /** Wraps the purchase batch write: counts the purchases it inserted (a fenced row comes back null). */
  countCommittedPurchases (write: (rows: PurchaseRecord[]) => Promise<Array<number | null>>): (rows: PurchaseRecord[]) => Promise<Array<number | null>> {
    return async (rows) => {
      const results = await write(rows)
      const inserted = results.filter((id) => id !== null).length
      if (inserted > 0) this.#purchases.inc(inserted)
      return results
    }
  }

  /** BatchWriter `onFlush`: one call per batch. */
  batchFlushed (writer: WriterName, { rows, ms, error }: FlushInfo): void {
    this.#flushSeconds.observe({ writer }, ms / 1000)
    if (error === undefined) this.#batchRows.inc({ writer }, rows)
    else this.#batchFailures.inc({ writer })
  }

  /** A request is about to be answered with this error. */
  requestFailed (error: unknown): void {
    if (error instanceof ServiceUnavailable) this.#unavailable.inc({ cause: unavailableCause(error, this.#ports) })
  }

  dependencyError (dependency: 'redis' | 'postgres'): void {
    this.#dependencyErrors.inc({ dependency })
  }

  /** Checkout attempts committed since start (all outcomes, and accepted ones), for rates. */
  get committedAttempts (): { total: number, accepted: number } {
    return { total: this.#attemptsTotal, accepted: this.#acceptedTotal }
  }

  get contentType (): string {
    return this.registry.contentType
  }

  metrics (): Promise<string> {
    return this.registry.metrics()
  }
}
