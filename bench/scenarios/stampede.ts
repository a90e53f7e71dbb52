/** The stampede: random users checking out random items of a fresh sale, as fast as they are answered. */
import type { StampedeHooks } from '../history.js'
import { runId, startService } from '../launch.js'
import { bump, countRefusal, measured, randomCheckout, row, saleOf, type Row } from '../measure.js'
import { CONNECTIONS, DURATION_S, STAMPEDE_ITEMS, STAMPEDE_USERS } from '../options.js'
import { rssMb, stop } from '../processes.js'
import { expectation, type Expectation } from '../verify.js'

export async function stampede (name = 'stampede', hooks: StampedeHooks = {}): Promise<{ row: Row, expect: Expectation }> {
  await hooks.prepare?.(`${runId}_${name}`)
  const service = await startService(name, STAMPEDE_ITEMS)
  const refusals: Record<string, number> = {}
  const expect = expectation(service, CONNECTIONS, false)
  try {
    const idle = rssMb(service.child.pid as number, 'VmRSS')
    console.log(`\n▶ ${name}: POST /checkout, random users and items, ${CONNECTIONS} connections, ${DURATION_S} s`)
    const measuring = await hooks.measure?.(service)
    const { result, cpu } = await measured(service.child, {
      url: service.url,
      connections: CONNECTIONS,
      duration: DURATION_S,
      requests: [{
        method: 'POST',
        setupRequest: (req) => {
          expect.checkoutsSent++
          return { ...req, path: randomCheckout(STAMPEDE_USERS, STAMPEDE_ITEMS) }
        },
        onResponse: (status, body) => {
          if (status === 200) bump(expect.acceptedBySale, saleOf(body))
          else countRefusal(refusals, status, body)
        }
      }]
    })
    const extra = await measuring?.()
    return { row: row(`${name} checkout`, result, refusals, cpu, { idle, peak: rssMb(service.child.pid as number) }, extra), expect }
  } finally {
    await stop(service.child)
  }
}
