/**
 * The floor of the stack (bench/floor-server.ts): the stampede's load on the least a checkout can
 * cost with Fastify, one Redis script and one batched row. The service is judged against it.
 */
import { startFloor } from '../launch.js'
import { countRefusal, measured, randomCheckout, row, type Row } from '../measure.js'
import { CONNECTIONS, DURATION_S, STAMPEDE_ITEMS, STAMPEDE_USERS } from '../options.js'
import { rssMb, stop } from '../processes.js'

export async function floor (name: string): Promise<Row> {
  const { url, child } = await startFloor(name)
  const refusals: Record<string, number> = {}
  try {
    const idle = rssMb(child.pid as number, 'VmRSS')
    console.log(`\n▶ ${name}: the stack's floor, POST /checkout, random users and items, ${CONNECTIONS} connections, ${DURATION_S} s`)
    const { result, cpu } = await measured(child, {
      url,
      connections: CONNECTIONS,
      duration: DURATION_S,
      requests: [{
        method: 'POST',
        setupRequest: (req) => ({ ...req, path: randomCheckout(STAMPEDE_USERS, STAMPEDE_ITEMS) }),
        onResponse: (status, body) => countRefusal(refusals, status, body)
      }]
    })
    return row(`${name} checkout`, result, refusals, cpu, { idle, peak: rssMb(child.pid as number) })
  } finally {
    await stop(child)
  }
}
