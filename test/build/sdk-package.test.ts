import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { buildTestApp, isolatedConfig, sql, TestClock } from '../support/helpers.js'

const run = promisify(execFile)
const SDK_DIR = fileURLToPath(new URL('../../sdk/', import.meta.url))
const TSC = fileURLToPath(new URL('../../node_modules/typescript/bin/tsc', import.meta.url))
/** Where the SDK is shown in use: its own README (what npm shows) and the project's. */
const READMES = ['sdk/README.md', 'README.md']

interface Example { readme: string, code: string, kind: 'commonjs' | 'module' }

/**
 * Every ```js example of the SDK in the READMEs, as a user would paste it: one with `require` runs
 * in a default `npm init -y` project (CommonJS), one with `import` in an ES module project.
 */
async function sdkExamples (): Promise<Example[]> {
  const examples: Example[] = []
  for (const readme of READMES) {
    const text = await readFile(new URL(`../../${readme}`, import.meta.url), 'utf8')
    for (const [, code = ''] of text.matchAll(/```js\n([^`]*)```/g)) {
      if (!code.includes("'flash-sale-sdk'")) continue
      examples.push({ readme, code, kind: /\brequire\('flash-sale-sdk'\)/.test(code) ? 'commonjs' : 'module' })
    }
  }
  return examples
}

/** A consumer project as `npm init -y` makes it (as a module project when `type` is given), with the tarball installed. */
async function project (dir: string, tarball: string, type?: 'module'): Promise<string> {
  await mkdir(dir)
  await run('npm', ['init', '-y'], { cwd: dir })
  if (type !== undefined) await run('npm', ['pkg', 'set', `type=${type}`], { cwd: dir })
  // openapi-fetch comes from npm's cache when it is there (it is after `npm ci` of this repo), else the registry.
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball], { cwd: dir })
  return dir
}

/** A server with a fresh sale for one example (each buys item 42 for alice). */
async function serve (t: TestContext) {
  const app = await buildTestApp(t, isolatedConfig(t, { SALE_ITEMS: 100 }), new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))
  await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, base: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` }
}

/** The same from TypeScript: the package's types resolve through its `exports` and refusals are typed. */
const TYPED_ESM = `import { createFlashSaleClient, type CheckoutErrorCode } from 'flash-sale-sdk'
const api = createFlashSaleClient('http://localhost:3000')
const { error } = await api.POST('/checkout', { params: { query: { user_id: 'alice', id: '42' } } })
const code: CheckoutErrorCode | undefined = error?.error
// @ts-expect-error not an error code of POST /checkout
const wrong: CheckoutErrorCode = 'code_used'
export { code, wrong }
`
/** And from a CommonJS TypeScript project (compiled to `require`: the `require` condition's types). */
const TYPED_CJS = `import { createFlashSaleClient, type PurchaseErrorCode } from 'flash-sale-sdk'
const api = createFlashSaleClient('http://localhost:3000')
export async function buy (code: string): Promise<PurchaseErrorCode | number | undefined> {
  const { data, error } = await api.POST('/purchase', { params: { query: { code } } })
  return error?.error ?? data?.purchase_id
}
// @ts-expect-error not an error code of POST /purchase
export const wrong: PurchaseErrorCode = 'item_sold'
`

const tsc = (cwd: string, file: string) => run(process.execPath, [TSC, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext',
  '--target', 'es2022', '--lib', 'es2022,dom', file], { cwd })
  .catch((error: { stdout?: string }) => assert.fail(`the packed types do not check in ${cwd}/${file}: ${error.stdout}`))

test('the SDK packs, installs into a CommonJS and an ES module project, and every README example buys there as pasted', { timeout: 170_000 }, async (t) => {
  const scratch = await mkdtemp(join(tmpdir(), 'flash-sale-sdk-'))
  t.after(() => rm(scratch, { recursive: true, force: true }))

  // `npm pack` runs the package's prepack: the build to dist/ (ES module) and dist/cjs/ (CommonJS), each with .d.ts.
  await run('npm', ['pack', '--pack-destination', scratch, '--silent'], { cwd: SDK_DIR })
  const [tarball, ...others] = (await readdir(scratch)).filter((name) => name.endsWith('.tgz'))
  assert.ok(tarball !== undefined && others.length === 0, 'one tarball')
  const sdkPackage = JSON.parse(await readFile(join(SDK_DIR, 'package.json'), 'utf8')) as { version: string }
  assert.equal(tarball, `flash-sale-sdk-${sdkPackage.version}.tgz`)

  const projects = {
    // What `npm init -y` makes is CommonJS (npm 11 writes `"type": "commonjs"`; older npm writes no type).
    commonjs: await project(join(scratch, 'default'), join(scratch, tarball)),
    module: await project(join(scratch, 'esm'), join(scratch, tarball), 'module')
  }
  const defaults = JSON.parse(await readFile(join(projects.commonjs, 'package.json'), 'utf8')) as { type?: string }
  assert.notEqual(defaults.type, 'module', 'npm init -y makes a CommonJS project')
  const installed = JSON.parse(await readFile(join(projects.commonjs, 'node_modules/flash-sale-sdk/package.json'), 'utf8')) as { dependencies: Record<string, string> }
  assert.ok(installed.dependencies['openapi-fetch'], 'openapi-fetch is a dependency of the package')
  await readFile(join(projects.commonjs, 'node_modules/openapi-fetch/package.json')) // installed with it

  const examples = await sdkExamples()
  const ofSdk = examples.filter((e) => e.readme === 'sdk/README.md').map((e) => e.kind).sort()
  assert.deepEqual(ofSdk, ['commonjs', 'module'], "the SDK's README shows it from CommonJS (a default npm init -y project) and from an ES module")
  for (const [i, example] of examples.entries()) {
    const { app, base } = await serve(t)
    const where = `${example.readme}'s ${example.kind} example`
    const code = example.code.replace("'http://localhost:3000'", JSON.stringify(base))
    assert.notEqual(code, example.code, `${where} names http://localhost:3000`)
    // Pasted as the project's entry point, `index.js`, run with plain node.
    const file = i === 0 ? 'index.js' : `example-${i}.js`
    await writeFile(join(projects[example.kind], file), code)
    const { stdout } = await run(process.execPath, [file], { cwd: projects[example.kind], env: { PATH: process.env.PATH } })
      .catch((error: { stderr?: string }) => assert.fail(`${where} fails: ${error.stderr}`))
    // console.log of the purchase: `{ purchase_id: 1, sale_id: ..., item: { id: 42, ... }, ..., user_purchases: 1 }`
    assert.match(stdout, /^\{\n {2}purchase_id: 1,\n {2}sale_id: \d+,\n {2}item: \{\n {4}id: 42,/, where)
    assert.match(stdout, /user_purchases: 1\n\}\n$/, where)
    assert.deepEqual(await sql(app, 'SELECT item_id FROM purchases'), [{ item_id: 42 }], where)
  }

  // `require` gives the CommonJS build, `import` the ES module one: the same API from both.
  const required = await run(process.execPath, ['-e', "const sdk = require('flash-sale-sdk'); console.log(typeof sdk.createFlashSaleClient, require.resolve('flash-sale-sdk'))"], { cwd: projects.commonjs })
  assert.match(required.stdout, /^function .*\/dist\/cjs\/index\.js\n$/)
  const imported = await run(process.execPath, ['--input-type=module', '-e', "const sdk = await import('flash-sale-sdk'); console.log(typeof sdk.createFlashSaleClient, import.meta.resolve('flash-sale-sdk'))"], { cwd: projects.module })
  assert.match(imported.stdout, /^function .*\/dist\/index\.js\n$/)

  await writeFile(join(projects.module, 'typed.ts'), TYPED_ESM)
  await tsc(projects.module, 'typed.ts')
  await writeFile(join(projects.commonjs, 'typed.ts'), TYPED_CJS)
  await tsc(projects.commonjs, 'typed.ts')
})
