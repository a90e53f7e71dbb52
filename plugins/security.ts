import fp from 'fastify-plugin'
import type { FastifyReply } from 'fastify'
import helmet, { type HelmetOptions } from 'helmet'
import type { IncomingMessage, ServerResponse } from 'node:http'

/**
 * helmet's headers for a JSON API (OWASP REST Security): a CSP that allows nothing and no
 * framing (no response of ours is a document to render), HSTS, nosniff, CORP/COOP same-origin,
 * no referrer; `X-Powered-By` is never sent. Left out, as meaningless for JSON and each a cost
 * on every response: X-DNS-Prefetch-Control, X-Download-Options (IE8), Origin-Agent-Cluster,
 * X-XSS-Protection (legacy filter) and X-Permitted-Cross-Domain-Policies (Flash/Acrobat).
 */
const API_HELMET: Readonly<HelmetOptions> = {
  contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
  xFrameOptions: { action: 'deny' },
  xDnsPrefetchControl: false,
  xDownloadOptions: false,
  originAgentCluster: false,
  xXssProtection: false,
  xPermittedCrossDomainPolicies: false
}

/**
 * The headers helmet would set, computed once: none depends on the request. (@fastify/helmet
 * rebuilds the helmet middleware on every request, which halved a bare route's throughput.)
 */
export function securityHeaders (options: Readonly<HelmetOptions> = API_HELMET): Array<[string, string]> {
  const headers = new Map<string, string>()
  const recorder = {
    setHeader: (name: string, value: string | number | readonly string[]) => { headers.set(name.toLowerCase(), String(value)) },
    removeHeader: (name: string) => { headers.delete(name.toLowerCase()) }
  }
  helmet(options)({} as IncomingMessage, recorder as unknown as ServerResponse, (err?: unknown) => { if (err) throw err })
  return [...headers]
}

/** The API's security headers (also written by hand where no reply exists: plugins/errors.ts `clientErrorHandler`). */
export const API_SECURITY_HEADERS: ReadonlyArray<readonly [string, string]> = securityHeaders()

/** Sets the security headers on a reply (also used where no hook runs: router errors in src/app.ts). */
export function setSecurityHeaders (reply: FastifyReply): void {
  for (const [name, value] of API_SECURITY_HEADERS) reply.header(name, value)
}

/** Security headers on every response, errors and 404s included (set before anything can fail). */
export default fp(async (fastify) => {
  fastify.addHook('onRequest', (_request, reply, done) => {
    setSecurityHeaders(reply)
    done()
  })
}, { name: 'security' })
