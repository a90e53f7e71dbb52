import cluster from 'node:cluster'
import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { configOrExit } from './config.js'
import { localDependenciesOrExit } from './local-dependencies.js'
import { assertListenable, describeDependencies, StartupError, waitForDependencies } from './startup.js'
import { startupLine } from './startup-line.js'

/**
 * Production entry: validated config, one Fastify instance, graceful shutdown on signals. On a
 * machine with nothing set up, Postgres and Redis that no variable names are provided first
 * (src/local-dependencies.ts; under `npm run start:cluster` the primary does it for its workers).
 */
const local = cluster.isPrimary ? await localDependenciesOrExit() : null
Object.assign(process.env, local?.env)
const config = configOrExit()

/** A failed start is one line for the operator (a stack only at LOG_LEVEL=debug or trace), then exit 1. */
async function exitOnStartFailure (error: unknown): Promise<never> {
  const message = error instanceof StartupError ? error.message : `start-up failed: ${(error as Error).message ?? String(error)}`
  console.error(message)
  if (!(error instanceof StartupError) && ['debug', 'trace'].includes(config.LOG_LEVEL)) console.error(error)
  // What was started here goes with the process.
  await local?.stop()
  process.exit(1)
}

// Before anything is migrated or rebuilt: a process that cannot listen must not touch shared state.
await assertListenable(config.HOST, config.PORT).catch(exitOnStartFailure)
await waitForDependencies(config, config.STARTUP_WAIT_SECONDS, (line) => console.error(line)).catch(exitOnStartFailure)

const app = await buildApp(config).catch(exitOnStartFailure)

closeWithGrace({ delay: config.SHUTDOWN_GRACE_MS }, async ({ signal, err }) => {
  if (err) app.log.error({ err }, 'closing after an unexpected error')
  else app.log.info({ signal }, 'closing: draining requests and flushing writes')
  await app.close()
  await local?.stop()
})

await app.listen({ host: config.HOST, port: config.PORT, backlog: config.LISTEN_BACKLOG }).catch(async (error: unknown) => {
  await app.close().catch(() => {})
  exitOnStartFailure(error)
})

// Where to go, for a person: plain text on a terminal, an info log line (same text) otherwise;
// once per service, not once per worker of `npm run start:cluster`.
if (cluster.worker === undefined || cluster.worker.id === 1) {
  const line = await startupLine(app, describeDependencies(config, local?.described))
  if (process.stdout.isTTY) process.stdout.write(`${line}\n`)
  else app.log.info(line)
}
