import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { kill } from '../support/fault-kit.js'

/**
 * "It just runs": the real server entry in an empty network namespace (`unshare -n`: nothing
 * answers on 5432 or 6379, as on a machine with only Node) with no DATABASE_URL or REDIS_URL.
 */
const unshareMissing = process.getuid?.() !== 0 || spawnSync('unshare', ['-n', 'true']).status !== 0
  ? 'needs root and unshare -n (util-linux)'
  : false

/** Inside the namespace: wait for /health, buy one item, SIGTERM the service; each step prints a line. */
const CLIENT = `
const base = 'http://127.0.0.1:3000'
const deadline = Date.now() + 60000
while (!(await fetch(base + '/health').then((r) => r.ok, () => false))) {
  if (Date.now() > deadline) { console.log('health: not ok within 60 s'); process.exit(1) }
  await new Promise((r) => setTimeout(r, 200))
}
const checkout = await fetch(base + '/checkout?user_id=newcomer&id=7', { method: 'POST' })
const { code } = await checkout.json()
const purchase = await fetch(base + '/purchase?code=' + code, { method: 'POST' })
console.log('checkout ' + checkout.status + ', purchase ' + purchase.status)
`

/** Runs `script` with `sh` in a fresh network namespace (loopback up); resolves its output and exit code. */
function inEmptyNetwork (t: TestContext, script: string, env: NodeJS.ProcessEnv): Promise<{ output: string, code: number | null }> {
  const named = ['DATABASE_URL', 'REDIS_URL', 'REDIS_SENTINELS', 'REDIS_CLUSTER_NODES']
  const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => !named.includes(name)))
  const child = spawn('unshare', ['-n', 'sh', '-c', `ip link set lo up\n${script}`], { env: { ...clean, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { output += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { output += chunk })
  t.after(() => kill(child))
  return new Promise((resolve) => child.once('exit', (code) => resolve({ output, code })))
}

test('with nothing on the default ports and no URL set, the service runs on an embedded Postgres and a private redis-server', { skip: unshareMissing, timeout: 120_000 }, async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'flash-local-'))
  chmodSync(dataDir, 0o755) // as a project directory is: the postgres user can enter it
  t.after(() => { spawnSync('pkill', ['-f', dataDir]); rmSync(dataDir, { recursive: true, force: true }) })
  const { output, code } = await inEmptyNetwork(t, `
    "${process.execPath}" --import tsx src/server.ts &
    server=$!
    "${process.execPath}" --input-type=module -e "${CLIENT.replaceAll('"', '\\"')}"
    kill -TERM $server; wait $server; echo "service exit $?"
    test -e "${dataDir}/postgres/postmaster.pid" && echo "embedded Postgres left running" || echo "embedded Postgres stopped"
  `, { LOCAL_DATA_DIR: dataDir, PORT: '3000', HOST: '127.0.0.1', LOG_LEVEL: 'info' })
  assert.equal(code, 0, output)
  assert.match(output, new RegExp(`using embedded Postgres \\(data in ${dataDir}/postgres\\) on 127\\.0\\.0\\.1:\\d+, private redis-server on 127\\.0\\.0\\.1:\\d+`))
  assert.match(output, /checkout 200, purchase 200/)
  assert.match(output, /service exit 0/)
  assert.match(output, /embedded Postgres stopped/)
})

test('what cannot be provided is named at once, with the command that gets it', { skip: unshareMissing }, async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'flash-local-'))
  t.after(() => { spawnSync('pkill', ['-f', dataDir]); rmSync(dataDir, { recursive: true, force: true }) })
  // A PATH without redis-server (only what running Postgres as root needs); node by its full path.
  const bin = join(dataDir, 'bin')
  mkdirSync(bin)
  for (const tool of ['id', 'useradd']) {
    const path = spawnSync('sh', ['-c', `command -v ${tool}`]).stdout.toString().trim()
    if (path !== '') symlinkSync(path, join(bin, tool))
  }
  const started = Date.now()
  const { output, code } = await inEmptyNetwork(t, `PATH=${bin} exec "${process.execPath}" --import tsx src/server.ts`, { LOCAL_DATA_DIR: dataDir })
  assert.equal(code, 1, output)
  assert.ok(Date.now() - started < 30_000, 'it fails at once instead of retrying for STARTUP_WAIT_SECONDS')
  assert.match(output, /A dependency is missing and nothing set their URL:\n {2}- Redis: Debian\/Ubuntu `sudo apt-get install redis-server`; macOS `brew install redis`/)
  assert.match(output, /docker compose up -d postgres redis/)
  assert.doesNotMatch(output, /- Postgres:/, 'the embedded Postgres was provided')
})
