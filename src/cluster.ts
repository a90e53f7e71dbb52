import cluster from 'node:cluster'
import { availableParallelism } from 'node:os'
import { localDependenciesOrExit } from './local-dependencies.js'

/**
 * Production start on every core: the primary forks one worker per core (WEB_CONCURRENCY
 * overrides) and replaces a worker that dies. Workers share nothing in memory: all sale state
 * is in Redis and Postgres, and the hourly roll is idempotent, so N workers behave as one.
 */
if (cluster.isPrimary) {
  // Once for all workers (they inherit the environment): Postgres and Redis that no variable names.
  const local = await localDependenciesOrExit()
  Object.assign(process.env, local.env)
  const workers = Number(process.env.WEB_CONCURRENCY ?? availableParallelism())
  let stopping = false
  for (let i = 0; i < workers; i++) cluster.fork()
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return
    console.error(`worker ${worker.process.pid} exited (${signal ?? code}); starting another`)
    cluster.fork()
  })
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      stopping = true
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill(signal)
    })
  }
  // What the primary started stops after the last worker has drained and closed.
  cluster.on('exit', () => {
    if (stopping && Object.keys(cluster.workers ?? {}).length === 0) local.stop().finally(() => process.exit(0))
  })
} else {
  await import('./server.js')
}
