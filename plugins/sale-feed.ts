import fp from 'fastify-plugin'
import { Gauge } from 'prom-client'
import { SaleFeed } from '../src/http/sale-feed.js'
import { METRICS_PREFIX } from '../src/http/metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The sale page's live feed: one snapshot a second to every open GET /sale/events stream. */
    saleFeed: SaleFeed
  }
}

/** Decorates `fastify.saleFeed`, counts its open streams, and ends them before the server closes. */
export default fp(async (fastify) => {
  const { sales, metrics, log } = fastify
  const feed = new SaleFeed({ now: () => sales.now(), summary: (now) => sales.summary(now), committedAttempts: () => metrics.committedAttempts, log })
  // eslint-disable-next-line no-new -- lives in the app's registry, read at scrape time
  new Gauge({
    name: `${METRICS_PREFIX}sale_page_streams`,
    help: 'Open GET /sale/events streams',
    registers: [metrics.registry],
    collect () { this.set(feed.size) }
  })
  // Before the server stops accepting: open streams end now instead of holding close() up.
  fastify.addHook('preClose', async () => { feed.close() })
  fastify.decorate('saleFeed', feed)
}, { name: 'sale-feed', dependencies: ['metrics', 'sales'] })
