import { randomBytes } from 'node:crypto'
import { rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import type { FastifyInstance } from 'fastify'
import pg from 'pg'
import { buildApp } from '../../src/app.js'
import { dropScratch } from '../../src/cli/scratch.js'
import { loadConfig, type Config } from '../../src/config.js'

/** A clock tests move by hand: sales roll on the hour without waiting for it. */
export class TestClock {
  /** `run`, when given, replaces the hand-set time (e.g. a clock running at its own pace). */
  constructor (public ms: number, private readonly run?: () => number) {}
  readonly now = (): number => this.run?.() ?? this.ms
  advance (ms: number): void { this.ms += ms }
  set (iso: string): void { this.ms = Date.parse(iso) }
}

/** Isolation for one test file: its own Postgres schema, Redis key prefix and attempt spool, removed afterwards. */
export function isolatedConfig (t: TestContext, overrides: Partial<Config> = {}): Config {
  const id = `t_${randomBytes(5).toString('hex')}`
  const config = loadConfig({
    LOG_LEVEL: 'silent',
    DATABASE_SCHEMA: id,
    REDIS_KEY_PREFIX: `${id}:`,
    SALE_ITEMS: 20,
    USER_LIMIT: 3,
    CHECKOUT_TTL_SECONDS: 60,
    SPOOL_DIR: join(tmpdir(), `flash-spool-${id}`),
    ...overrides
  })
  // A test may have stopped its own dedicated Postgres or Redis: then there is nothing to clean.
  t.after(() => dropScratch(config).catch(() => {}))
  // A service killed mid-outage leaves spooled attempts of a schema that is gone now.
  t.after(() => rmSync(join(tmpdir(), `flash-spool-${id}`), { recursive: true, force: true }))
  return config
}

/** Builds the real app (real Postgres, real Redis) and closes it when the test ends. */
export async function buildTestApp (t: TestContext, config: Config, clock: TestClock): Promise<FastifyInstance> {
  const app = await buildApp(config, { now: clock.now })
  t.after(() => app.close())
  await app.ready()
  return app
}

/** A connection of its own on the test's schema (not the service's pool), ended when the test ends. */
export async function schemaClient (t: TestContext, config: Config, options: pg.ClientConfig = {}): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: config.DATABASE_URL, options: `-c search_path=${config.DATABASE_SCHEMA}`, ...options })
  await client.connect()
  t.after(() => client.end())
  return client
}

/** Plain SQL against the test's schema, for assertions on what was committed. */
export async function sql<T extends pg.QueryResultRow> (app: FastifyInstance, text: string, values: unknown[] = []): Promise<T[]> {
  const { rows } = await app.pg.query<T>(text, values)
  return rows
}

export const checkout = (app: FastifyInstance, query: string) => app.inject({ method: 'POST', url: `/checkout?${query}` })
export const purchase = (app: FastifyInstance, code: string) => app.inject({ method: 'POST', url: `/purchase?code=${code}` })
