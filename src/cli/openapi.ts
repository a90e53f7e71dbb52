/**
 * `npm run openapi`: writes openapi.json at the repository root, the OpenAPI document the service
 * serves at /docs/json. It builds the real app (so the file is exactly what the routes declare),
 * which needs the configured Postgres and Redis (the local ones by default), but works in a
 * throwaway Postgres schema and Redis key prefix that it removes afterwards. Re-run it after
 * changing a route or a schema; test/api/openapi.test.ts fails while the file is stale.
 */
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { buildApp } from '../app.js'
import { configOrExit, type Config } from '../config.js'
import { dropScratch } from './scratch.js'

export const OPENAPI_FILE = fileURLToPath(new URL('../../openapi.json', import.meta.url))

/** The committed form of a document: keys sorted at every level, two-space indent, final newline. */
export function renderOpenApi (document: unknown): string {
  return JSON.stringify(sortKeys(document), null, 2) + '\n'
}

function sortKeys (value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys)
  if (value === null || typeof value !== 'object') return value
  return Object.fromEntries(Object.keys(value).sort().map((key) => [key, sortKeys((value as Record<string, unknown>)[key])]))
}

/** The document of an app built with `config`, rendered for the file. */
export async function generateOpenApi (config: Config): Promise<string> {
  const app = await buildApp(config)
  try {
    await app.ready()
    return renderOpenApi(app.swagger())
  } finally {
    await app.close()
  }
}

/** A configuration like the service's, in its own schema and key prefix (see `dropScratch`). */
function scratchConfig (): Config {
  const id = `openapi_${randomBytes(5).toString('hex')}`
  return configOrExit({ LOG_LEVEL: 'warn', DATABASE_SCHEMA: id, REDIS_KEY_PREFIX: `${id}:`, SALE_ITEMS: 1 })
}

async function main (): Promise<void> {
  const config = scratchConfig()
  try {
    const text = await generateOpenApi(config)
    await writeFile(OPENAPI_FILE, text)
    const { paths } = JSON.parse(text) as { paths: Record<string, Record<string, unknown>> }
    const operations = Object.values(paths).reduce((n, item) => n + Object.keys(item).length, 0)
    console.log(`wrote ${OPENAPI_FILE} (${operations} operations on ${Object.keys(paths).length} paths)`)
  } catch (error) {
    console.error(`npm run openapi needs the Postgres and Redis of the configuration: ${(error as Error).message}`)
    process.exitCode = 1
  } finally {
    await dropScratch(config).catch((error: unknown) => console.error(`could not remove ${config.DATABASE_SCHEMA}: ${(error as Error).message}`))
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await main()
