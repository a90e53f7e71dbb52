import { readFileSync } from 'node:fs'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { saleAssetSchema, saleEventsSchema, salePageSchema } from '../schemas/sale-page.js'
import { ServiceUnavailable } from '../src/sale/errors.js'

/**
 * The page's files, read once at start-up from public/ (next to routes/ in the source tree and
 * in dist/, where the build copies it): a missing file stops the start, not a later request.
 */
const publicDir = new URL('../public/', import.meta.url)
const readAsset = (file: string): string => readFileSync(new URL(file, publicDir), 'utf8')

/** The page runs only its own same-origin script and stylesheet and talks only to its own origin. */
const PAGE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/** GET /sale (a static page, no build step), its script and stylesheet, and its live feed (plugins/sale-feed.ts). */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  const page = readAsset('sale.html')
  const script = readAsset('sale.js')
  const style = readAsset('sale.css')
  const icon = readAsset('favicon.svg')
  const feed = fastify.saleFeed

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
