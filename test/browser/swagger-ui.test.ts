import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { test } from 'node:test'
import { chromium, type Locator, type Page } from 'playwright-core'
import { DOCS_PREFIX } from '../../plugins/openapi.js'
import { buildTestApp, isolatedConfig, sql, TestClock } from '../support/helpers.js'

/**
 * A newcomer buying an item from Swagger UI ("Try it out") in headless Chromium, against the app
 * over real HTTP, as test/browser/sale-page.test.ts drives the sale page: a missing browser skips the
 * test, except under CI, where it fails.
 */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const haveChromium = existsSync(CHROMIUM)
const skipBrowser = !haveChromium && !process.env.CI ? `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)` : false

/** Opens an operation's panel and switches it to "Try it out". */
async function tryItOut (page: Page, operationId: string): Promise<Locator> {
  const operation = page.locator(`#operations-sale-${operationId}`)
  await operation.locator('.opblock-summary').first().click()
  await operation.locator('button.try-out__btn').click()
  return operation
}

/** Clicks Execute and returns the response Swagger UI received (status, JSON body) once it shows it. */
async function execute (page: Page, operation: Locator, path: string): Promise<{ status: number, body: Record<string, unknown>, url: URL }> {
  const [response] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === path && r.request().method() === 'POST', { timeout: 15_000 }),
    operation.locator('button.execute').click()
  ])
  const body = await response.json() as Record<string, unknown>
  const shown = operation.locator('.live-responses-table .response .response-col_status').first()
  await shown.filter({ hasText: String(response.status()) }).waitFor({ timeout: 5000 })
  return { status: response.status(), body, url: new URL(response.url()) }
}

/** Opens /docs afresh: every Try it out form starts as Swagger UI fills it in. */
async function openDocs (page: Page, origin: string): Promise<void> {
  await page.goto(`${origin}${DOCS_PREFIX}`)
  await page.locator('#operations-sale-checkout').waitFor({ timeout: 20_000 })
}

/** Checks out `id` with the other example values Swagger UI fills in (user `user-1234`); returns the code. */
async function checkoutFromDocs (page: Page, origin: string, id: string): Promise<string> {
  const checkout = await tryItOut(page, 'checkout')
  assert.equal(await checkout.locator('tr[data-param-name="user_id"] input').inputValue(), 'user-1234')
  assert.equal(await checkout.locator('tr[data-param-name="id"] input').inputValue(), '42')
  await checkout.locator('tr[data-param-name="id"] input').fill(id)
  const res = await execute(page, checkout, '/checkout')
  assert.equal(res.status, 200, JSON.stringify(res.body))
  assert.equal(res.url.origin, origin, 'Swagger UI calls the service that served it (the served document\'s first server)')
  return res.body.code as string
}

test('Swagger UI "Try it out" buys with the code pasted into either field, the other left as it was', { skip: skipBrowser, timeout: 90_000 }, async (t) => {
  assert.ok(haveChromium, `CI must provide Chromium at ${CHROMIUM}`)
  const app = await buildTestApp(t, isolatedConfig(t, { SALE_ITEMS: 100 }), new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))
  await app.listen({ host: '127.0.0.1', port: 0 })
  const origin = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'] })
  t.after(() => browser.close())
  const page = await browser.newPage({ viewport: { width: 1280, height: 2000 } })
  const problems: string[] = []
  page.on('pageerror', (error) => problems.push(error.message))
  const example = { checkout_code: 'q1mHh2p1oN2wq0mVf3c3Zw' }

  // 1. The code pasted into the query field; the body keeps the example code Swagger UI filled in.
  await openDocs(page, origin)
  const first = await checkoutFromDocs(page, origin, '42')
  let purchase = await tryItOut(page, 'purchase')
  const bodyField = () => purchase.locator('textarea.body-param__text')
  const codeField = () => purchase.locator('tr[data-param-name="code"] input')
  assert.equal(await codeField().inputValue(), '')
  assert.deepEqual(JSON.parse(await bodyField().inputValue()), example)
  await codeField().fill(first)
  const byQuery = await execute(page, purchase, '/purchase')
  assert.equal(byQuery.status, 200, JSON.stringify(byQuery.body))
  assert.equal((byQuery.body.item as { id: number }).id, 42)
  assert.deepEqual(JSON.parse(await bodyField().inputValue()), example, 'the body was not touched')

  // 2. A fresh page: the code pasted into the body (in place of the example); the query field left empty.
  await openDocs(page, origin)
  const second = await checkoutFromDocs(page, origin, '43')
  purchase = await tryItOut(page, 'purchase')
  await bodyField().fill(JSON.stringify({ checkout_code: second }, null, 2))
  assert.equal(await codeField().inputValue(), '', 'the query field was not touched')
  const byBody = await execute(page, purchase, '/purchase')
  assert.equal(byBody.status, 200, JSON.stringify(byBody.body))
  assert.equal((byBody.body.item as { id: number }).id, 43)
  assert.equal(byBody.body.user_purchases, 2)

  // 3. The query field filled and the body cleared: Swagger UI still sends `Content-Type: application/json`
  //    with the empty body, which is no body.
  await openDocs(page, origin)
  const third = await checkoutFromDocs(page, origin, '44')
  purchase = await tryItOut(page, 'purchase')
  await codeField().fill(third)
  await bodyField().fill('')
  const cleared = await execute(page, purchase, '/purchase')
  assert.equal(cleared.status, 200, JSON.stringify(cleared.body))

  const rows = await sql<{ item_id: number }>(app, 'SELECT item_id FROM purchases ORDER BY item_id')
  assert.deepEqual(rows.map((r) => r.item_id), [42, 43, 44])
  assert.deepEqual(problems, [])
})
