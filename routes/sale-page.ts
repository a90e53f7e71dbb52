import { readFileSync } from 'node:fs'
import { PassThrough } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Gauge } from 'prom-client'
import { METRICS_PREFIX } from '../plugins/metrics.js'
import { saleAssetSchema, saleEventsSchema, salePageSchema, type SaleSnapshotT } from '../schemas/sale-page.js'
import { withDeadline } from '../src/lib/deadline.js'
import { ServiceUnavailable } from '../src/sale/errors.js'
import { isoTime, presentSaleCounts } from '../src/http/presenters.js'
import { saleWindow } from '../src/sale/sale.js'

/**
 * The page's files, read once at start-up from public/ (next to routes/ in the source tree and
 * in dist/, where the build copies it): a missing file stops the start, not a later request.
 */
const publicDir = new URL('../public/', import.meta.url)
const readAsset = (file: string): string => readFileSync(new URL(file, publicDir), 'utf8')

/** The page runs only its own same-origin script and stylesheet and talks only to its own origin. */
const PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

const TICK_MS = 1000
/** Checkouts per second are averaged over this window (samples one tick apart). */
const RATE_WINDOW_TICKS = 5
/** A client this far behind (a stalled connection) is dropped rather than buffered for. */
const MAX_BUFFERED_BYTES = 64 * 1024
const SUMMARY_DEADLINE_MS = 900

interface Sample { at: number, total: number, accepted: number }

/**
 * Fans one snapshot a second out to every open event stream. The timer runs only while someone
 * watches, a slow tick is never overlapped by the next, and `close()` ends every stream so
 * open pages never hold up a graceful shutdown.
 */
class SaleFeed {
  readonly #fastify: FastifyInstance
  readonly #clients = new Set<PassThrough>()
  #timer: NodeJS.Timeout | undefined
  #samples: Sample[] = []
  #last: string | null = null
  #ticking = false
  #closed = false

  constructor (fastify: FastifyInstance) {
    this.#fastify = fastify
  }

  get size (): number {
    return this.#clients.size
  }

  open (): PassThrough | null {
    if (this.#closed) return null
    const stream = new PassThrough()
    // Reconnect after 2 s if the stream drops (e.g. a restart).
    stream.write('retry: 2000\n\n')
    if (this.#last !== null) stream.write(this.#last)
    this.#clients.add(stream)
    if (this.#timer === undefined) {
      const tick = () => { this.#tick().catch((err: unknown) => this.#fastify.log.warn({ err }, 'sale feed tick failed')) }
      this.#timer = setInterval(tick, TICK_MS)
      tick()
    }
    return stream
  }

  remove (stream: PassThrough): void {
    this.#clients.delete(stream)
    if (this.#clients.size === 0) this.#stop()
  }

  close (): void {
    this.#closed = true
    this.#stop()
    for (const stream of this.#clients) stream.end()
    this.#clients.clear()
  }

  #stop (): void {
    clearInterval(this.#timer)
    this.#timer = undefined
    this.#samples = []
    this.#last = null
  }

  async #tick (): Promise<void> {
    if (this.#ticking) return
    this.#ticking = true
    try {
      const snapshot = await this.#snapshot()
      if (this.#timer === undefined) return
      const message = `data: ${JSON.stringify(snapshot)}\n\n`
      this.#last = message
      for (const stream of this.#clients) {
        if (stream.writableLength > MAX_BUFFERED_BYTES) {
          this.#clients.delete(stream)
          stream.destroy()
        } else {
          stream.write(message)
        }
      }
    } finally {
      this.#ticking = false
    }
  }

  async #snapshot (): Promise<SaleSnapshotT> {
    const { sales, metrics } = this.#fastify
    const now = sales.now()
    const { total, accepted } = metrics.committedAttempts
    const sample = { at: performance.now(), total, accepted }
    this.#samples.push(sample)
    if (this.#samples.length > RATE_WINDOW_TICKS + 1) this.#samples.shift()
    const first = this.#samples[0] as Sample
    const seconds = (sample.at - first.at) / 1000
    const perSecond = (n: number) => seconds > 0 ? Math.round(n / seconds * 10) / 10 : 0

    let status: SaleSnapshotT['status'] = 'live'
    let sale: SaleSnapshotT['sale'] = null
    try {
      sale = presentSaleCounts(await withDeadline(sales.summary(now), SUMMARY_DEADLINE_MS))
    } catch {
      status = 'unavailable'
    }
    return {
      status,
      now: isoTime(now),
      sale,
      next_sale_at: isoTime(saleWindow(now).endsAt),
      checkouts_per_second: perSecond(total - first.total),
      accepted_per_second: perSecond(accepted - first.accepted)
    }
  }
}

/** GET /sale (a static page, no build step), its script and stylesheet, and its live feed. */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  const page = readAsset('sale.html')
  const script = readAsset('sale.js')
  const style = readAsset('sale.css')
  const icon = readAsset('favicon.svg')
  const feed = new SaleFeed(fastify)

  fastify.metrics.registry.registerMetric(new Gauge({
    name: `${METRICS_PREFIX}sale_page_streams`,
    help: 'Open GET /sale/events streams',
    registers: [],
    collect () { this.set(feed.size) }
  }))

  // Before the server stops accepting: open streams end now instead of holding close() up.
  fastify.addHook('preClose', async () => { feed.close() })

  fastify.get('/sale', { schema: salePageSchema }, async (_request, reply) =>
    reply.type('text/html; charset=utf-8').header('content-security-policy', PAGE_CSP).header('cache-control', 'no-cache').send(page))
  fastify.get('/sale/sale.js', { schema: saleAssetSchema }, async (_request, reply) =>
    reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send(script))
  fastify.get('/sale/sale.css', { schema: saleAssetSchema }, async (_request, reply) =>
    reply.type('text/css; charset=utf-8').header('cache-control', 'no-cache').send(style))
  fastify.get('/sale/favicon.svg', { schema: saleAssetSchema }, async (_request, reply) =>
    reply.type('image/svg+xml').header('cache-control', 'max-age=86400').send(icon))

  fastify.get('/sale/events', { schema: saleEventsSchema, exposeHeadRoute: false }, async (_request, reply) => {
    const stream = feed.open()
    if (stream === null) throw new ServiceUnavailable('shutting_down')
    reply.raw.on('close', () => feed.remove(stream))
    return reply
      .type('text/event-stream; charset=utf-8')
      .header('cache-control', 'no-store')
      // Proxies (nginx) must pass each event on at once, not buffer the stream.
      .header('x-accel-buffering', 'no')
      // The schema documents the body as a string (its media type is what matters); it is streamed.
      .send(stream as unknown as string)
  })
}

export default routes
