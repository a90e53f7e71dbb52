import { createHash } from 'node:crypto'
import fp from 'fastify-plugin'
import fastifySwagger from '@fastify/swagger'
import fastifySwaggerUi from '@fastify/swagger-ui'
import { MethodNotAllowedError, NotFoundError } from '../schemas/common.js'
import { packageInfo } from '../src/package-info.js'

/** Where the interactive documentation lives; the document itself is at `${DOCS_PREFIX}/json`. */
export const DOCS_PREFIX = '/docs'

/** The one inline `<style>` Swagger UI renders (the colours of its top-bar logo): allowed by its hash. */
const SWAGGER_UI_LOGO_STYLE = '.logo_small_svg__cls-2{fill:#fff}.logo_small_svg__cls-3{fill:#85ea2d}'

/**
 * The CSP of the /docs pages only: Swagger UI's own scripts, styles and images from this origin
 * (React sets styles through the CSSOM, which needs no 'unsafe-inline') and fetches of the
 * document from this origin. Every other response keeps plugins/security.ts's `default-src 'none'`.
 */
export const DOCS_CSP = {
  'default-src': ["'none'"],
  'base-uri': ["'self'"],
  'connect-src': ["'self'"],
  'font-src': ["'self'", 'data:'],
  'form-action': ["'self'"],
  'frame-ancestors': ["'none'"],
  'img-src': ["'self'", 'data:'],
  'object-src': ["'none'"],
  'script-src': ["'self'"],
  'script-src-attr': ["'none'"],
  'style-src': ["'self'", `'sha256-${createHash('sha256').update(SWAGGER_UI_LOGO_STYLE).digest('base64')}'`]
}

const API_DESCRIPTION = `${packageInfo.description}.

Every UTC hour a new sale opens with \`SALE_ITEMS\` items; a user may hold or buy at most \`USER_LIMIT\` of them.
Check out an item (POST /checkout) to get a short-lived code, then redeem it (POST /purchase).

All bodies are JSON. Every error is \`{"error": "<stable_code>", "message": "<human text>"}\`: each error status
of each operation lists the codes it can carry. A 400 \`invalid_request\` is only for a request this document
refuses (a parameter or body that fails its schema); a request that matches the schemas but breaks a rule between
parameters that OpenAPI cannot state (each operation's description says which) is 422 \`invalid_request\`.
Besides those, any path answers 404 \`not_found\` when no route matches, 405 \`method_not_allowed\` with \`Allow\`
when the path exists but not with that method (\`components.responses\` \`NotFound\` and \`MethodNotAllowed\`), and
400 or 414 \`invalid_url\` when the path itself cannot be decoded. A request Node's HTTP parser cannot read
gets the same shape before any route is chosen: 400 \`invalid_content_length\` or \`bad_request\`, 408
\`request_timeout\`, 431 \`headers_too_large\`; then the connection closes. 429 and 503 carry \`Retry-After\`.`

/**
 * Where the API is. A generator reads the first entry as the default base URL (@hey-api/openapi-ts
 * takes it only when it is an absolute URL without variables), so the committed openapi.json names
 * `npm start`'s address first. A relative URL is resolved against the document's own location
 * (OpenAPI 3.0.3 § 4.7.5), which the served /docs/json has and the file has not: the served
 * document names itself first (`servedDocument`), so Swagger UI and tools reading a live service
 * call that service.
 */
export const SERVERS = [
  { url: 'http://localhost:3000', description: 'A service started with `npm start` on this machine (the default HOST and PORT)' },
  { url: '/', description: 'The service that serves this document (relative to where it was fetched)' }
] as const

/** The document as /docs/json serves it: the committed one, with the relative server first. */
export function servedDocument<T extends { servers?: Array<{ url: string }> }> (document: T): T {
  const servers = document.servers ?? []
  return { ...document, servers: [...servers.filter((s) => s.url === '/'), ...servers.filter((s) => s.url !== '/')] }
}

/**
 * A reusable response (`components.responses`) of an error body as errorResponse builds it: what
 * plugins/errors.ts answers on any path (404, 405), outside every operation.
 */
function responseOf (schema: { description?: string, headers?: Record<string, { description?: string }>, 'x-examples'?: unknown }) {
  const { description = '', headers, 'x-examples': examples, ...body } = schema
  return {
    description,
    ...(headers && {
      headers: Object.fromEntries(Object.entries(headers).map(([name, { description: about, ...header }]) => [name, { description: about, schema: header }]))
    }),
    content: { 'application/json': { schema: body, examples } }
  }
}

/**
 * OpenAPI 3 document generated from the routes' TypeBox schemas (@fastify/swagger, as `fastify.swagger()`)
 * and Swagger UI at /docs. Registered before the routes, whose definitions it collects as they are added.
 */
export default fp(async (fastify) => {
  /** Operations whose body schema is keyed by media type: Fastify validates such a body only when one is sent. */
  const optionalBodies = new Set<string>()

  await fastify.register(fastifySwagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: packageInfo.name,
        version: packageInfo.version,
        description: API_DESCRIPTION,
        license: { name: 'MIT' }
      },
      servers: SERVERS.map((server) => ({ ...server })),
      tags: [
        { name: 'sale', description: 'Check out and buy items of the current hourly sale' },
        { name: 'ops', description: 'Operations: service description, health and monitoring' }
      ]
    },
    // Shared schemas registered with addSchema get their $id as component name instead of `def-N`.
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => typeof json.$id === 'string' ? json.$id : `def-${i}` },
    transform: ({ schema, url, route }) => {
      const body = schema?.body as { content?: unknown } | undefined
      if (body?.content !== undefined) {
        for (const method of [route.method].flat()) optionalBodies.add(`${method.toLowerCase()} ${url}`)
      }
      return { schema, url }
    },
    // @fastify/swagger marks every request body required; ours are not when Fastify does not require them.
    transformObject: (documentObject) => {
      const openapiObject = 'openapiObject' in documentObject ? documentObject.openapiObject : {}
      // What any path can answer outside its operations (plugins/errors.ts), as reusable responses.
      const components = ((openapiObject as { components?: Record<string, unknown> }).components ??= {})
      components.responses = { NotFound: responseOf(NotFoundError), MethodNotAllowed: responseOf(MethodNotAllowedError) }
      const paths = (openapiObject as { paths?: Record<string, Record<string, { requestBody?: { required?: boolean } }>> }).paths ?? {}
      for (const [url, operations] of Object.entries(paths)) {
        for (const [method, operation] of Object.entries(operations)) {
          if (operation.requestBody !== undefined && optionalBodies.has(`${method} ${url}`)) operation.requestBody.required = false
        }
      }
      return openapiObject
    }
  })

  await fastify.register(fastifySwaggerUi, {
    routePrefix: DOCS_PREFIX,
    uiConfig: { deepLinking: true, displayRequestDuration: true, tryItOutEnabled: false },
    // Replaces the API's CSP (set in onRequest by plugins/security.ts) on the /docs routes only.
    staticCSP: DOCS_CSP,
    // The served document names the serving service first (see SERVERS): Swagger UI calls it.
    transformSpecification: (document) => servedDocument(document as { servers?: Array<{ url: string }> }),
    theme: { title: `${packageInfo.name} API` }
  })
}, { name: 'openapi', dependencies: ['security'] })
