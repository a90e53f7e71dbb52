/** The machine's ceiling: a bare Fastify POST route answering a small JSON body (compiled, like the service). */
import { startProcess } from '../launch.js'
import { measured, row, type Row } from '../measure.js'
import { CONNECTIONS, DURATION_S } from '../options.js'
import { rssMb, stop } from '../processes.js'

export async function bare (): Promise<Row> {
  const { url, child } = await startProcess(['dist/bench/bare-server.js'], {})
  try {
    const idle = rssMb(child.pid as number, 'VmRSS')
    console.log(`\n▶ bare Fastify route, ${CONNECTIONS} connections, ${DURATION_S} s`)
    const { result, cpu } = await measured(child, { url: `${url}/checkout?user_id=u1&id=1`, method: 'POST', connections: CONNECTIONS, duration: DURATION_S })
    return row('bare fastify route', result, {}, cpu, { idle, peak: rssMb(child.pid as number) })
  } finally {
    await stop(child)
  }
}
