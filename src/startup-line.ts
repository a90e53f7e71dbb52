import type { FastifyInstance } from 'fastify'
import type { AddressInfo } from 'node:net'
import { packageInfo } from './package-info.js'

/** 10000 -> "10,000", without `toLocaleString`: Intl would map ~4 MB of ICU data into the service for one line. */
const count = (n: number) => String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',')
const hhmm = (ms: number) => new Date(ms).toISOString().slice(11, 16)

/**
 * The one human line the service prints once it listens: where to go (/docs, /sale, /metrics)
 * the sale that is open with its counts, and which Postgres and Redis it uses. A wildcard address (all interfaces, the default
 * for containers) is shown as localhost, the address that works from this machine.
 */
export async function startupLine (app: FastifyInstance, dependencies: string): Promise<string> {
  const { address, port } = app.server.address() as AddressInfo
  const wildcard = address === '0.0.0.0' || address === '::'
  const host = wildcard ? 'localhost' : address.includes(':') ? `[${address}]` : address
  const base = `http://${host}:${port}`
  const sale = await app.sales.summary().then(
    (s) => `sale ${s.sale.id} open until ${hhmm(s.sale.endsAt)} UTC: ${count(s.items)} items, ${count(s.sold)} sold, ${count(s.held)} held, ${count(s.left)} left`,
    (error: Error) => `no sale open yet (${error.message})`)
  return `${packageInfo.name} ${packageInfo.version} listening on ${wildcard ? `all interfaces, port ${port}` : base}: ` +
    `API docs ${base}/docs, sale page ${base}/sale, metrics ${base}/metrics; ${sale}; using ${dependencies}`
}
