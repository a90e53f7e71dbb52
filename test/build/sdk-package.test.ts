import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { buildTestApp, isolatedConfig, sql, TestClock } from '../support/helpers.js'

const run = promisify(execFile)
const SDK_DIR = fileURLToPath(new URL('../../sdk/', import.meta.url))
const TSC = fileURLToPath(new URL('../../node_modules/typescript/bin/tsc', import.meta.url))

/** The README's five-line example, as another project would write it (pointed at the test's server). */
async function readmeExample (base: string): Promise<string> {
  const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8')
  const example = /```js\n(import \{ createFlashSaleClient \} from 'flash-sale-sdk'\n[^`]*)```/.exec(readme)?.[1]
  assert.ok(example !== undefined, 'the README shows the SDK example')
  assert.equal(example.trim().split('\n').length, 5, 'five lines')
  return example.replace("'http://localhost:3000'", JSON.stringify(base))
}

/** The same from TypeScript: the package's types resolve through its `exports` and refusals are typed. */
const TYPED = `import { createFlashSaleClient, type CheckoutErrorCode } from 'flash-sale-sdk'
const api = createFlashSaleClient('http://localhost:3000')
const { error } = await api.POST('/checkout', { params: { query: { user_id: 'alice', id: '42' } } })
const code: CheckoutErrorCode | undefined = error?.error
// @ts-expect-error not an error code of POST /checkout
const wrong: CheckoutErrorCode = 'code_used'
export { code, wrong }
`

test('the SDK packs (npm pack), installs into another project and buys over HTTP under plain node', { timeout: 120_000 }, async (t) => {
  const scratch = await mkdtemp(join(tmpdir(), 'flash-sale-sdk-'))
  t.after(() => rm(scratch, { recursive: true, force: true }))

  // `npm pack` runs the package's prepack: the build to dist/ (JS + .d.ts).
  await run('npm', ['pack', '--pack-destination', scratch, '--silent'], { cwd: SDK_DIR })
  const [tarball, ...others] = (await readdir(scratch)).filter((name) => name.endsWith('.tgz'))
  assert.ok(tarball !== undefined && others.length === 0, 'one tarball')
  const sdkPackage = JSON.parse(await readFile(join(SDK_DIR, 'package.json'), 'utf8')) as { version: string }
  assert.equal(tarball, `flash-sale-sdk-${sdkPackage.version}.tgz`)

  const project = join(scratch, 'project')
  await run('mkdir', [project])
  await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'buyer', private: true, type: 'module' }))
  // openapi-fetch comes from npm's cache when it is there (it is after `npm ci` of this repo), else the registry.
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', join(scratch, tarball)], { cwd: project })
  const installed = JSON.parse(await readFile(join(project, 'node_modules/flash-sale-sdk/package.json'), 'utf8')) as { dependencies: Record<string, string> }
  assert.ok(installed.dependencies['openapi-fetch'], 'openapi-fetch is a dependency of the package')
  await readFile(join(project, 'node_modules/openapi-fetch/package.json')) // installed with it

  const app = await buildTestApp(t, isolatedConfig(t, { SALE_ITEMS: 100 }), new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))
  await app.listen({ host: '127.0.0.1', port: 0 })
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`

  await writeFile(join(project, 'buy.mjs'), await readmeExample(base))
  const { stdout } = await run(process.execPath, ['buy.mjs'], { cwd: project, env: { PATH: process.env.PATH } })
  // console.log of the purchase: `{ purchase_id: 1, sale_id: ..., item: { id: 42, ... }, ..., user_purchases: 1 }`
  assert.match(stdout, /^\{\n {2}purchase_id: 1,\n {2}sale_id: \d+,\n {2}item: \{\n {4}id: 42,/)
  assert.match(stdout, /user_purchases: 1\n\}\n$/)
  assert.deepEqual(await sql(app, 'SELECT item_id FROM purchases'), [{ item_id: 42 }])

  await writeFile(join(project, 'typed.ts'), TYPED)
  await run(process.execPath, [TSC, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext',
    '--target', 'es2022', '--lib', 'es2022,dom', 'typed.ts'], { cwd: project })
    .catch((error: { stdout?: string }) => assert.fail(`the packed types do not check in a consumer: ${error.stdout}`))
})
