import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { configOrExit } from './config.js'

/** Production entry: validated config, one Fastify instance, graceful shutdown on signals. */
const config = configOrExit()

const app = await buildApp(config)

closeWithGrace({ delay: config.SHUTDOWN_GRACE_MS }, async ({ signal, err }) => {
  if (err) app.log.error({ err }, 'closing after an unexpected error')
  else app.log.info({ signal }, 'closing: draining requests and flushing writes')
  await app.close()
})

await app.listen({ host: config.HOST, port: config.PORT })
