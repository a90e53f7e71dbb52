/**
 * The machine's ceiling for `npm run bench`: Fastify with the same settings and a response
 * schema of the same size as /checkout, but no Redis, no Postgres, no rules.
 */
import Fastify, { LogController } from 'fastify'
import { CheckoutResponse } from '../schemas/checkout.js'

const app = Fastify({ logger: { level: 'warn' }, logController: new LogController({ disableRequestLogging: true }) })
const body = {
  code: 'q1mHh2p1oN2wq0mVf3c3Zw',
  expires_at: '2031-03-04T13:11:00.000Z',
  sale_id: 1,
  item: { id: 1, name: 'Item #1', description: 'Flash-sale item 1 of 10000', price: 199.99 }
}
app.post('/checkout', { schema: { response: { 200: CheckoutResponse } } }, async () => body)
app.get('/health', async () => ({ status: 'ok' }))
await app.listen({ host: process.env.HOST ?? '127.0.0.1', port: Number(process.env.PORT ?? 3999) })
console.warn(`bare server listening on ${process.env.PORT}`)
// Exit normally on the bench's SIGTERM so that --cpu-prof (BENCH_PROFILE=1) writes its profile.
process.once('SIGTERM', () => { app.close().catch(() => process.exit(1)) })
