import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { assertAcknowledgedAreCommitted, assertNoUserOverLimit, assertSoldOutExactly, freePort, kill, missingTool, newAcks, query, startService, waitFor, type Service } from '../support/fault-kit.js'
import { isolatedConfig } from '../support/helpers.js'

const ITEMS = 300
const LIMIT = 10
const USERS = 60

/**
 * Debian's haproxy in front of `services`, health-checking GET /health every 250 ms; a request
 * that cannot connect to one instance is retried on another. Killed when the test ends.
 */
async function startHaproxy (t: TestContext, services: Service[]): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'flash-haproxy-'))
  const port = await freePort()
  writeFileSync(join(dir, 'haproxy.cfg'), [
    'global',
    '  maxconn 2000',
    'defaults',
    '  mode http',
    '  timeout connect 500ms',
    '  timeout client 10s',
    '  timeout server 10s',
    '  retries 3',
    '  option redispatch 1',
    // One request per client connection. With keep-alive, the moment an instance died (or was
    // marked down) some clients' next POST on a reused connection failed at the socket ("other
    // side closed", never logged by HAProxy): a client cannot tell that from a lost request.
    '  option httpclose',
    'frontend flash',
    `  bind 127.0.0.1:${port}`,
    '  default_backend instances',
    'backend instances',
    '  balance roundrobin',
    '  option httpchk GET /health',
    '  default-server inter 250ms fall 2 rise 2',
    ...services.map((s, i) => `  server app${i} 127.0.0.1:${s.port} check`)
  ].join('\n') + '\n')
  const haproxy = spawn('haproxy', ['-f', join(dir, 'haproxy.cfg'), '-db'], { stdio: ['ignore', 'ignore', 'inherit'] })
  t.after(() => {
    haproxy.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  })
  const url = `http://127.0.0.1:${port}`
  await waitFor('HAProxy to route /health to a service answering 200', async () => (await fetch(`${url}/health`)).status === 200, 10_000)
  return url
}

test('three instances behind HAProxy, one SIGKILLed under load: only 200/4xx/502/503, the sale sells out exactly', { skip: missingTool('haproxy') }, async (t) => {
  const config = isolatedConfig(t, { SALE_ITEMS: ITEMS, USER_LIMIT: LIMIT, CHECKOUT_TTL_SECONDS: 3 })
  // Short Postgres bounds: the dead instance's redeemed-but-unrecorded purchases are given back
  // after 2 x (connect + query timeout + 1 s) = 5 s, its holds expire after 3 s.
  const env = { PG_CONNECT_TIMEOUT_MS: '500', PG_QUERY_TIMEOUT_MS: '1000' }
  const services = await Promise.all([0, 1, 2].map(() => startService(t, config, { env })))
  const url = await startHaproxy(t, services)

  const acks = newAcks()
  const statuses = new Map<number, number>()
  type Answer = { code?: string, error?: string, purchase_id?: number }
  const send = async (path: string): Promise<{ status: number, body: Answer }> => {
    const res = await fetch(`${url}${path}`, { method: 'POST' })
    statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
    // HAProxy's own 502/503 pages are HTML.
    const body = res.headers.get('content-type')?.startsWith('application/json') ? await res.json() as Answer : {}
    if (res.status === 502 || res.status === 503) await sleep(20)
    return { status: res.status, body }
  }
  const recorded = async () => (await query<{ n: number }>(config, 'SELECT count(*)::int AS n FROM purchases'))[0]?.n ?? 0

  const load = Promise.all(Array.from({ length: USERS }, async (_, u) => {
    while (!acks.stop) {
      const reserved = await send(`/checkout?user_id=u${u}&id=${1 + Math.floor(Math.random() * ITEMS)}`)
      if (reserved.status === 403 || reserved.body.error === 'sold_out') await sleep(100)
      const code = reserved.body.code
      if (reserved.status !== 200 || code === undefined) continue
      acks.codes.add(code)
      // A 502/503 purchase is retried with the same code until it gets a real answer.
      for (let attempt = 0; attempt < 20 && !acks.stop; attempt++) {
        const bought = await send(`/purchase?code=${code}`)
        if (bought.status === 200) acks.purchases.set(code, bought.body.purchase_id as number)
        if (bought.status !== 502 && bought.status !== 503) break
      }
    }
  }))

  await sleep(1500)
  const [victim, ...survivors] = services as [Service, ...Service[]]
  await kill(victim.child)
  const killedAt = Date.now()
  try {
    await waitFor(`all ${ITEMS} items to be recorded as purchases after one instance was killed`, async () => await recorded() === ITEMS, 40_000, () => recorded())
  } finally {
    acks.stop = true
    await load
  }
  t.diagnostic(`statuses ${JSON.stringify(Object.fromEntries(statuses))}; sold out ${Date.now() - killedAt} ms after the kill`)

  assert.deepEqual([...statuses.keys()].filter((s) => s >= 500 && s !== 502 && s !== 503), [], 'only 200, 4xx, 502 and 503')
  assert.ok((statuses.get(200) ?? 0) > ITEMS, 'load went through the proxy')
  await assertAcknowledgedAreCommitted(config, acks)
  await assertSoldOutExactly(config, ITEMS)
  await assertNoUserOverLimit(config, LIMIT)

  // The surviving instances, asked directly, describe the same sale, sold out.
  const views = await Promise.all(survivors.map(async (s) => (await (await fetch(s.url)).json() as { sale: unknown }).sale))
  assert.deepEqual(views[1], views[0], 'instances agree')
  assert.deepEqual(views.map((v) => { const { sold, left } = v as { sold: number, left: number }; return [sold, left] }),
    survivors.map(() => [ITEMS, 0]))
})
