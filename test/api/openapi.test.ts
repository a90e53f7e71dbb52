import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { test } from 'node:test'
import { errorCodes, type FastifyInstance } from 'fastify'
import openapiTS, { astToString, COMMENT_HEADER } from 'openapi-typescript'
import { chromium } from 'playwright-core'
import { FRAMEWORK_ERRORS, PARSER_ERRORS, REFUSAL_STATUS } from '../../plugins/errors.js'
import { DOCS_PREFIX, servedDocument } from '../../plugins/openapi.js'
import { securityHeaders } from '../../plugins/security.js'
import { generateOpenApi, OPENAPI_FILE, renderOpenApi } from '../../src/cli/openapi.js'
import { buildTestApp, isolatedConfig, TestClock } from '../support/helpers.js'

const T0 = '2031-03-04T13:10:00.000Z'
const SDK_SCHEMA_FILE = new URL('../../sdk/schema.d.ts', import.meta.url)
const SDK_PACKAGE_FILE = new URL('../../sdk/package.json', import.meta.url)
/** A Chromium for the browser check (CI installs Debian's), or none: that one test is then skipped. */
const CHROMIUM = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((path) => path !== undefined && existsSync(path))

interface Media { schema?: { properties?: { error?: { enum?: string[] } } }, examples?: Record<string, { value: { error: string, message: string } }> }
interface Link { operationId?: string, parameters?: Record<string, string> }
interface Operation {
  operationId?: string,
  summary?: string,
  description?: string,
  tags?: string[],
  requestBody?: { required?: boolean },
  responses: Record<string, { description: string, content?: Record<string, Media>, links?: Record<string, Link> }>
}
interface Document { paths: Record<string, Record<string, Operation>>, servers?: Array<{ url: string }> }

/** (method, path) of every route of the app, from Fastify's own route tree (HEAD twins left out). */
function appRoutes (app: FastifyInstance): Array<{ method: string, url: string }> {
  const routes: Array<{ method: string, url: string }> = []
  const stack: string[] = []
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const match = /^([│├└─ ]*)(\S.*?)(?: \(([A-Z, ]+)\))?$/.exec(line)
    if (match === null) continue
    const depth = (match[1] ?? '').length / 4
    stack.length = depth
    stack.push(match[2] ?? '')
    for (const method of (match[3] ?? '').split(', ').filter((m) => m !== '' && m !== 'HEAD')) {
      routes.push({ method, url: stack.join('') })
    }
  }
  return routes
}

/** The `error` codes one response declares. */
function codesOf (operation: Operation | undefined, status: number | string): string[] {
  return operation?.responses[String(status)]?.content?.['application/json']?.schema?.properties?.error?.enum ?? []
}

test('the served document is the committed openapi.json (relative server first), and `npm run openapi` generates the same', async (t) => {
  const config = isolatedConfig(t)
  const app = await buildTestApp(t, config, new TestClock(Date.parse(T0)))
  const res = await app.inject({ method: 'GET', url: `${DOCS_PREFIX}/json` })
  assert.equal(res.statusCode, 200)
  const served = renderOpenApi(res.json())

  const committed = await readFile(OPENAPI_FILE, 'utf8').catch(() => '(missing)')
  assert.ok(committed === '(missing)' || served === renderOpenApi(servedDocument(JSON.parse(committed) as Document)),
    'openapi.json is not what the routes declare: run `npm run openapi` (then `npm run sdk`) and commit both')
  // A generator takes the first server as its base URL: the file names `npm start`'s address first; the
  // served document, which has a location of its own, names itself (Swagger UI then calls this service).
  assert.deepEqual((JSON.parse(committed) as Document).servers?.map((s) => s.url), ['http://localhost:3000', '/'])
  assert.deepEqual(res.json<Document>().servers?.map((s) => s.url), ['/', 'http://localhost:3000'])
  const generated = await generateOpenApi(isolatedConfig(t))
  assert.ok(generated === committed, '`npm run openapi` would write another openapi.json: run it and commit the result')
})

test('the committed SDK types are what openapi-typescript generates from openapi.json', async () => {
  const expected = COMMENT_HEADER + astToString(await openapiTS(new URL(`file://${OPENAPI_FILE}`)))
  const committed = await readFile(SDK_SCHEMA_FILE, 'utf8').catch(() => '(missing)')
  assert.ok(committed === expected, 'sdk/schema.d.ts is stale: run `npm run sdk` and commit it')
  // The SDK package is versioned as the API it speaks (openapi.json's info.version, the service's version).
  const apiVersion = (JSON.parse(await readFile(OPENAPI_FILE, 'utf8')) as { info: { version: string } }).info.version
  const sdkVersion = (JSON.parse(await readFile(SDK_PACKAGE_FILE, 'utf8')) as { version: string }).version
  assert.equal(sdkVersion, apiVersion, 'sdk/package.json has another version than openapi.json: run `npm run sdk` and commit it')
})

test('/docs serves Swagger UI under a CSP that allows it; every other route keeps the strict one', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))
  const page = await app.inject({ method: 'GET', url: DOCS_PREFIX })
  assert.equal(page.statusCode, 200)
  assert.match(String(page.headers['content-type']), /^text\/html/)
  assert.match(page.body, /swagger-ui-bundle\.js/)
  const csp = String(page.headers['content-security-policy'])
  const directives = new Map(csp.split(';').map((d) => d.trim()).filter(Boolean).map((d) => {
    const [name = '', ...values] = d.split(/\s+/)
    return [name, values] as const
  }))
  for (const name of ['script-src', 'connect-src']) {
    assert.deepEqual(directives.get(name), ["'self'"], `${name} allows the page's own assets and /docs/json: ${csp}`)
  }
  const [self, ...hashes] = directives.get('style-src') ?? []
  assert.equal(self, "'self'")
  for (const hash of hashes) assert.match(hash, /^'sha256-[A-Za-z0-9+/]+=*'$/)
  assert.deepEqual(directives.get('img-src'), ["'self'", 'data:'])
  assert.ok(!csp.includes('unsafe-inline') && !csp.includes('unsafe-eval'), csp)

  // Every script and stylesheet the page loads is served, under the same policy.
  const assets = [...page.body.matchAll(/(?:src|href)="([^"]+\.(?:js|css))"/g)].map((m) => m[1] ?? '')
  assert.ok(assets.length >= 4, page.body)
  for (const asset of assets) {
    const res = await app.inject({ method: 'GET', url: new URL(asset, `http://x${DOCS_PREFIX}`).pathname })
    assert.equal(res.statusCode, 200, asset)
    assert.equal(res.headers['content-security-policy'], csp, asset)
  }

  const apiCsp = new Map(securityHeaders()).get('content-security-policy')
  assert.match(String(apiCsp), /default-src 'none'/)
  for (const url of ['/health', '/', '/no-such-route']) {
    const res = await app.inject({ method: 'GET', url })
    assert.equal(res.headers['content-security-policy'], apiCsp, url)
  }
})

test('Swagger UI renders in a real browser without a CSP violation', { skip: CHROMIUM === undefined && 'no Chromium found' }, async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  assert.ok(address !== null && typeof address === 'object')
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  t.after(() => browser.close())
  const page = await browser.newPage()
  const problems: string[] = []
  page.on('console', (message) => { if (message.type() === 'error') problems.push(message.text()) })
  page.on('pageerror', (error) => problems.push(error.message))
  await page.addInitScript({ content: "document.addEventListener('securitypolicyviolation', (e) => console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI))" })
  await page.goto(`http://127.0.0.1:${address.port}${DOCS_PREFIX}`)
  await page.waitForSelector('#operations-sale-checkout', { timeout: 20_000 })
  const paths = await page.$$eval('.opblock-summary-path', (elements) => elements.map((e) => e.textContent))
  assert.ok(paths.includes('/checkout') && paths.includes('/purchase'), String(paths))
  assert.deepEqual(problems, [])
})

test('every route is documented, and every error status lists the exact codes the service sends with it', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))
  const doc = (await app.inject({ method: 'GET', url: `${DOCS_PREFIX}/json` })).json<Document>()
  const op = (method: string, url: string) => doc.paths[url]?.[method]

  // Not API operations: Swagger UI itself, and static assets (a path ending in a file extension).
  const routes = appRoutes(app).filter(({ url }) => !url.startsWith(DOCS_PREFIX) && !/\.[a-z0-9]+$/i.test(url))
  for (const route of ['GET /', 'GET /health', 'POST /checkout', 'POST /purchase']) {
    assert.ok(routes.some(({ method, url }) => `${method} ${url}` === route), `${route} is among the app's routes (printRoutes parsing)`)
  }
  for (const { method, url } of routes) {
    const operation = op(method.toLowerCase(), url)
    assert.ok(operation !== undefined, `${method} ${url} is missing from the document: give it a schema and run \`npm run openapi\``)
    assert.ok(operation.summary && operation.tags?.length, `${method} ${url} has a summary and a tag`)
  }
  assert.ok(!Object.keys(doc.paths).some((url) => url.startsWith(DOCS_PREFIX)), 'the /docs routes are not documented')

  // Generators name methods by operationId: one per operation, unique.
  const operationIds = Object.values(doc.paths).flatMap((operations) => Object.values(operations).map((o) => o.operationId))
  assert.ok(operationIds.every((id) => typeof id === 'string' && /^[a-z][A-Za-z]+$/.test(id)), String(operationIds))
  assert.equal(new Set(operationIds).size, operationIds.length, 'operationIds are unique')
  // A checkout's code is the purchase's input.
  assert.deepEqual(doc.paths['/checkout']?.post?.responses['200']?.links?.purchase,
    { operationId: 'purchase', parameters: { code: '$response.body#/code' }, description: 'Redeem the checkout code: `POST /purchase?code={code}`' })

  const checkout = op('post', '/checkout')
  const purchase = op('post', '/purchase')
  const ours = { 'POST /checkout': checkout, 'POST /purchase': purchase, 'GET /': op('get', '/'), 'GET /health': op('get', '/health') }

  // Every response of these is described; every error body declares its codes as an enum, with one example per code.
  for (const [route, operation] of Object.entries(ours)) {
    assert.ok(operation !== undefined, route)
    assert.ok(operation.description, `${route} has a description`)
    for (const [status, response] of Object.entries(operation.responses)) {
      assert.ok(response.description && response.description !== 'Default Response', `${route} ${status} is described`)
      const media = response.content?.['application/json']
      if (Number(status) < 400 || media?.schema?.properties?.error === undefined) continue
      const codes = codesOf(operation, status)
      assert.ok(codes.length > 0, `${route} ${status} lists its error codes`)
      assert.deepEqual(Object.keys(media.examples ?? {}).sort(), [...codes].sort(), `${route} ${status} has an example per code`)
      for (const [code, example] of Object.entries(media.examples ?? {})) assert.equal(example.value.error, code)
    }
  }
  assert.equal(purchase?.requestBody?.required, false, 'the `?code=` shape has no body')

  // Each business refusal is documented, and only under the status plugins/errors.ts gives it.
  for (const [code, status] of Object.entries(REFUSAL_STATUS)) {
    const documented = Object.values(ours).flatMap((operation) => Object.keys(operation?.responses ?? {}).filter((s) => codesOf(operation, s).includes(code)))
    assert.ok(documented.length > 0, `${code} is documented`)
    assert.deepEqual([...new Set(documented)], [String(status)], `${code} is documented under ${status} only`)
  }
  assert.deepEqual(codesOf(checkout, 403), ['user_limit_reached'])
  assert.deepEqual(codesOf(checkout, 404), ['unknown_item'])
  assert.deepEqual(codesOf(checkout, 409).sort(), ['already_reserved_by_you', 'item_reserved', 'item_sold', 'no_active_sale', 'sold_out'])
  assert.deepEqual(codesOf(purchase, 404), ['unknown_code'])
  assert.deepEqual(codesOf(purchase, 409), ['code_used'])
  assert.deepEqual(codesOf(purchase, 410).sort(), ['code_expired', 'sale_over'])
  // The rules between parameters the document cannot state.
  assert.deepEqual(codesOf(checkout, 422), ['invalid_request'])
  assert.deepEqual(codesOf(purchase, 422), ['invalid_request'])

  // Both POST routes read a body, so every body error Fastify raises (renamed by plugins/errors.ts) can reach them.
  for (const operation of [checkout, purchase]) {
    for (const [fastifyCode, code] of Object.entries(FRAMEWORK_ERRORS)) {
      if (code === 'invalid_url') continue // raised by the router before any route matches: documented in `info`
      const ErrorClass = (errorCodes as unknown as Record<string, new () => { statusCode: number }>)[fastifyCode]
      assert.ok(ErrorClass !== undefined, fastifyCode)
      const status = new ErrorClass().statusCode
      assert.ok(codesOf(operation, status).includes(code), `${code} (${fastifyCode}) is documented under ${status}`)
    }
    // What Node's HTTP parser refuses (plugins/errors.ts clientErrorHandler) can reach any route.
    for (const [parserCode, [status, code]] of Object.entries(PARSER_ERRORS)) {
      assert.ok(codesOf(operation, status).includes(code), `${code} (${parserCode}) is documented under ${status}`)
    }
    assert.ok(codesOf(operation, 400).includes('bad_request'), 'the fallback of unknown 4xx errors')
    assert.deepEqual(codesOf(operation, 503), ['service_unavailable', 'clock_skew'])
  }
  assert.deepEqual(codesOf(checkout, 429), ['rate_limited'])
  assert.deepEqual(codesOf(op('get', '/'), 503), ['service_unavailable', 'clock_skew'])
  for (const operation of Object.values(ours)) assert.deepEqual(codesOf(operation, 500), ['internal_error'])
  assert.equal(purchase?.responses['429'], undefined, 'only checkout is rate limited')
})

test('a known path asked with another method is 405 with Allow, in the error shape and with the security headers', async (t) => {
  const app = await buildTestApp(t, isolatedConfig(t), new TestClock(Date.parse(T0)))
  const doc = (await app.inject({ method: 'GET', url: `${DOCS_PREFIX}/json` })).json<Document & { components: { responses: Record<string, unknown> } }>()
  assert.ok(doc.components.responses.MethodNotAllowed !== undefined && doc.components.responses.NotFound !== undefined, 'both are documented')
  const apiHeaders = securityHeaders()
  const methods = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const
  for (const [url, operations] of Object.entries(doc.paths)) {
    const documented = Object.keys(operations).map((m) => m.toUpperCase())
    const allowed = [...new Set([...documented, ...(documented.includes('GET') ? ['HEAD'] : [])])].sort()
    for (const method of methods.filter((m) => !allowed.includes(m))) {
      const res = await app.inject({ method, url })
      assert.equal(res.statusCode, 405, `${method} ${url}`)
      assert.equal(res.headers.allow, allowed.join(', '), `${method} ${url}`)
      if (method !== 'HEAD') {
        assert.deepEqual(Object.keys(res.json()).sort(), ['error', 'message'])
        assert.equal(res.json().error, 'method_not_allowed')
      }
      for (const [name, value] of apiHeaders) assert.equal(res.headers[name], value, `${method} ${url}: ${name}`)
    }
  }
  // With its query string, and for the static assets under a wildcard route too.
  assert.equal((await app.inject({ method: 'PUT', url: '/health?x=1' })).headers.allow, 'GET, HEAD')
  assert.equal((await app.inject({ method: 'DELETE', url: `${DOCS_PREFIX}/static/index.html` })).headers.allow, 'GET, HEAD')
  // An unknown path is still 404.
  const unknown = await app.inject({ method: 'PUT', url: '/no-such-path' })
  assert.equal(unknown.statusCode, 404)
  assert.equal(unknown.json().error, 'not_found')
  assert.equal(unknown.headers.allow, undefined)
})
