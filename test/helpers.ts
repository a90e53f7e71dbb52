import { randomBytes } from 'node:crypto'
import type { TestContext } from 'node:test'
import type { FastifyInstance } from 'fastify'
import pg from 'pg'
import { buildApp } from '../src/app.js'
import { dropScratch } from '../src/cli/scratch.js'
import { loadConfig, type Config } from '../src/config.js'

/** A clock tests move by hand: sales roll on the hour without waiting for it. */
export class TestClock {
  /** `run`, when given, replaces the hand-set time (e.g. a clock running at its own pace). */
  constructor (public ms: number, private readonly run?: () => number) {}
  readonly now = (): number => this.run?.() ?? this.ms
  advance (ms: number): void { this.ms += ms }
  set (iso: string): void { this.ms = Date.parse(iso) }
}

/** Isolation for one test file: its own Postgres schema and Redis key prefix, removed afterwards. */
export function isolatedConfig (t: TestContext, overrides: Partial<Config> = {}): Config {
  const id = `t_${randomBytes(5).toString('hex')}`
  const config = loadConfig({
    LOG_LEVEL: 'silent',
    DATABASE_SCHEMA: id,
    REDIS_KEY_PREFIX: `${id}:`,
    SALE_ITEMS: 20,
    USER_LIMIT: 3,
    CHECKOUT_TTL_SECONDS: 60,
    ...overrides
  })
  // A test may have stopped its own dedicated Postgres or Redis: then there is nothing to clean.
  t.after(() => dropScratch(config).catch(() => {}))
  return config
}

/** Builds the real app (real Postgres, real Redis) and closes it when the test ends. */
export async function buildTestApp (t: TestContext, config: Config, clock: TestClock): Promise<FastifyInstance> {
  const app = await buildApp(config, { now: clock.now })
  t.after(() => app.close())
  await app.ready()
  return app
}

/** Plain SQL against the test's schema, for assertions on what was committed. */
export async function sql<T extends pg.QueryResultRow> (app: FastifyInstance, text: string, values: unknown[] = []): Promise<T[]> {
  const { rows } = await app.pg.query<T>(text, values)
  return rows
}

export const checkout = (app: FastifyInstance, query: string) => app.inject({ method: 'POST', url: `/checkout?${query}` })
export const purchase = (app: FastifyInstance, code: string) => app.inject({ method: 'POST', url: `/purchase?code=${code}` })
