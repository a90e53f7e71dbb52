import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { freePort, pingRedis, waitFor } from './fault-kit.js'

/**
 * Disposable Redis topologies on loopback for the topology tests: a 3-primary Redis Cluster and a
 * Sentinel group (primary, replica, three sentinels), each from Debian's redis-server and
 * redis-sentinel, in a temporary directory on ports of their own. Every process is SIGKILLed and
 * the directory removed when the test ends, whatever happened.
 */

const run = promisify(execFile)

/** A temporary directory and a process list that the test's end cleans up. */
function workspace (t: TestContext, name: string) {
  const dir = mkdtempSync(join(tmpdir(), `flash-${name}-`))
  const processes: ChildProcess[] = []
  t.after(() => {
    for (const child of processes) child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  })
  const spawnIn = (command: string, args: string[]): ChildProcess => {
    const child = spawn(command, args, { cwd: dir, stdio: 'ignore' })
    processes.push(child)
    return child
  }
  return { dir, spawnIn }
}

const redisArgs = (port: number): string[] =>
  ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']

/** True when nothing listens on this loopback port right now. */
const isFree = (port: number): Promise<boolean> => new Promise((resolve) => {
  const server = createServer().once('error', () => resolve(false))
  server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
})

/** A free port whose Cluster bus port (+10000) is free too. */
async function clusterPort (): Promise<number> {
  for (;;) {
    const port = await freePort()
    if (port + 10000 <= 65535 && await isFree(port + 10000)) return port
  }
}

/** One query to one node (a plain connection, no prefix, no retries). */
export async function redisCommand (port: number, ...args: string[]): Promise<unknown> {
  const client = new Redis(port, '127.0.0.1', { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
  client.on('error', () => {})
  try {
    await client.connect()
    return await client.call(args[0] as string, ...args.slice(1))
  } finally {
    client.disconnect()
  }
}

export interface RedisCluster { ports: number[], nodes: string, processes: Map<number, ChildProcess> }

/**
 * Three primaries (and `replicasEach` replicas of each), slots split by `redis-cli --cluster
 * create`; a node is declared failed after 2 s. Resolves once every node sees the cluster ok.
 */
export async function startCluster (t: TestContext, replicasEach = 0): Promise<RedisCluster> {
  const { spawnIn } = workspace(t, 'cluster')
  const ports: number[] = []
  for (let i = 0; i < 3 * (1 + replicasEach); i++) ports.push(await clusterPort())
  const processes = new Map(ports.map((port) => [port, spawnIn('redis-server', [...redisArgs(port), '--cluster-enabled', 'yes',
    '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '2000'])]))
  for (const port of ports) await waitFor(`redis-server on port ${port} to answer PING`, () => pingRedis(port), 5000)
  await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`),
    '--cluster-replicas', String(replicasEach), '--cluster-yes'])
  await waitFor('every cluster node to report cluster_state:ok with its replicas in sync', async () => {
    let replicasInSync = 0
    for (const port of ports) {
      if (!String(await redisCommand(port, 'CLUSTER', 'INFO')).includes('cluster_state:ok')) return false
      if (String(await redisCommand(port, 'INFO', 'replication')).includes('master_link_status:up')) replicasInSync++
    }
    const ranges = await redisCommand(ports[0] as number, 'CLUSTER', 'SLOTS') as unknown[][]
    return replicasInSync === 3 * replicasEach && ranges.every((range) => range.length === 3 + replicasEach)
  }, 15_000)
  return { ports, nodes: ports.map((p) => `127.0.0.1:${p}`).join(','), processes }
}

/** The ports of the primary serving `key`'s slot and of its replicas, as `node` sees them. */
export async function slotOwners (node: number, key: string): Promise<{ primary: number, replicas: number[] }> {
  const slot = Number(await redisCommand(node, 'CLUSTER', 'KEYSLOT', key))
  const ranges = await redisCommand(node, 'CLUSTER', 'SLOTS') as Array<[number, number, ...Array<[string, number]>]>
  const range = ranges.find(([start, end]) => slot >= start && slot <= end)
  if (range === undefined) throw new Error(`no node serves slot ${slot}`)
  const [, , primary, ...replicas] = range
  if (primary === undefined) throw new Error(`slot ${slot} has no primary`)
  return { primary: primary[1], replicas: replicas.map(([, port]) => port) }
}

export interface SentinelGroup {
  name: string
  sentinels: string
  sentinelPorts: number[]
  primary: { port: number, process: ChildProcess }
  replica: { port: number, process: ChildProcess }
}

/**
 * A primary, its replica and three sentinels (quorum 2) that declare the primary down after
 * 1 s; resolves once the replica is in sync and every sentinel knows the replica and the other
 * two sentinels (so a failover can be voted at once).
 */
export async function startSentinels (t: TestContext): Promise<SentinelGroup> {
  const { dir, spawnIn } = workspace(t, 'sentinel')
  const name = 'flashsale'
  const primaryPort = await freePort()
  const replicaPort = await freePort()
  const primary = spawnIn('redis-server', redisArgs(primaryPort))
  const replica = spawnIn('redis-server', [...redisArgs(replicaPort), '--replicaof', '127.0.0.1', String(primaryPort)])
  await waitFor(`the replica on port ${replicaPort} to report master_link_status:up`, async () => String(await redisCommand(replicaPort, 'INFO', 'replication')).includes('master_link_status:up'), 10_000)

  const sentinelPorts = [await freePort(), await freePort(), await freePort()]
  for (const port of sentinelPorts) {
    const conf = join(dir, `sentinel-${port}.conf`)
    writeFileSync(conf, [
      `port ${port}`,
      'bind 127.0.0.1',
      `dir ${dir}`,
      `sentinel monitor ${name} 127.0.0.1 ${primaryPort} 2`,
      `sentinel down-after-milliseconds ${name} 1000`,
      `sentinel failover-timeout ${name} 10000`,
      `sentinel parallel-syncs ${name} 1`
    ].join('\n') + '\n')
    spawnIn('redis-sentinel', [conf])
  }
  await waitFor('every sentinel to see one replica and two other sentinels', async () => {
    for (const port of sentinelPorts) {
      const replicas = await redisCommand(port, 'SENTINEL', 'REPLICAS', name) as unknown[]
      const others = await redisCommand(port, 'SENTINEL', 'SENTINELS', name) as unknown[]
      if (replicas.length !== 1 || others.length !== 2) return false
    }
    return true
  }, 15_000)
  return {
    name,
    sentinels: sentinelPorts.map((p) => `127.0.0.1:${p}`).join(','),
    sentinelPorts,
    primary: { port: primaryPort, process: primary },
    replica: { port: replicaPort, process: replica }
  }
}
