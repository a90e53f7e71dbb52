import { envSchema } from 'env-schema'
import { Type, type Static } from '@sinclair/typebox'

/**
 * Every setting the service reads from the environment. Defaults point at the
 * local Postgres and Redis so `npm start` works on a fresh machine; env-schema
 * validates at start-up and names the offending variable (e.g. "env/PORT must be integer").
 */
/** Empty, or `host:port` pairs separated by commas (Redis Sentinel and Cluster seeds). */
const HOST_PORT_LIST = '^$|^[A-Za-z0-9.-]+:[0-9]{1,5}(,[A-Za-z0-9.-]+:[0-9]{1,5})*$'

export const ConfigSchema = Type.Object({
  NODE_ENV: Type.String({ default: 'development' }),
  /**
   * Where `npm start` and `npm test` keep the data of the embedded Postgres they start when no
   * DATABASE_URL is set and none answers on 127.0.0.1:5432 (src/local-dependencies.ts); relative
   * to the project directory.
   */
  LOCAL_DATA_DIR: Type.String({ default: '.flash-sale' }),
  /** Where to listen: loopback by default, so a laptop's `npm start` is not on every interface; the image sets 0.0.0.0. */
  HOST: Type.String({ default: '127.0.0.1' }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 3000 }),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((level) => Type.Literal(level)),
    { default: 'info' }
  ),
  /** Request/response logs are opt-in: at stampede rates they cost more than the request. */
  LOG_REQUESTS: Type.Boolean({ default: false }),

  DATABASE_URL: Type.String({ pattern: '^postgres(ql)?://', default: 'postgres://postgres@127.0.0.1:5432/postgres' }),
  /** Postgres schema holding the tables; tests give each file its own. */
  DATABASE_SCHEMA: Type.String({ pattern: '^[a-z_][a-z0-9_]{0,62}$', default: 'public' }),
  PG_POOL_MAX: Type.Integer({ minimum: 1, maximum: 200, default: 10 }),
  PG_CONNECT_TIMEOUT_MS: Type.Integer({ minimum: 100, default: 2000 }),
  PG_QUERY_TIMEOUT_MS: Type.Integer({ minimum: 100, default: 5000 }),

  /**
   * Partitions and pooling (src/db/partitions.ts, plugins/partitions.ts). DATABASE_DIRECT_URL reaches
   * Postgres itself for what a transaction-mode pooler such as PgBouncer cannot carry: migrations
   * (a session advisory lock) and partition maintenance (DETACH ... CONCURRENTLY, lock_timeout);
   * unset, DATABASE_URL is used for both.
   */
  DATABASE_DIRECT_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  /**
   * 'transaction' when DATABASE_URL is a transaction-mode pooler (PgBouncer 1.18 refuses startup
   * parameters other than a few): the pool then sends no session settings and no named prepared
   * statements (src/sale/record-writers.ts), and the pooler's
   * server connections must carry search_path = DATABASE_SCHEMA and statement_timeout =
   * PG_QUERY_TIMEOUT_MS (PgBouncer's connect_query, or ALTER ROLE ... SET); start-up checks they do.
   */
  DATABASE_POOL_MODE: Type.Union([Type.Literal('session'), Type.Literal('transaction')], { default: 'session' }),
  PARTITIONS_AHEAD_DAYS: Type.Integer({ minimum: 1, maximum: 60, default: 3 }),
  ATTEMPTS_RETENTION_DAYS: Type.Integer({ minimum: 1, default: 30 }),
  PARTITION_MAINTENANCE_INTERVAL_MS: Type.Integer({ minimum: 1000, default: 3_600_000 }),

  REDIS_URL: Type.String({ pattern: '^rediss?://', default: 'redis://127.0.0.1:6379' }),
  /**
   * Prefix for every Redis key; tests give each file its own. No braces allowed: a `{` in the
   * prefix would become the hash tag of every key and put all sales on one Cluster slot.
   */
  REDIS_KEY_PREFIX: Type.String({ pattern: '^[A-Za-z0-9:_-]{0,64}$', default: 'flash:' }),
  /**
   * Redis topology (src/redis/client.ts): empty = the single server at REDIS_URL. Sentinel:
   * `host:port,...` of the sentinels and the monitored master's name. Cluster: `host:port,...`
   * of some cluster nodes (the rest are discovered). REDIS_URL's user, password and TLS still
   * apply to the data nodes. At most one of the two lists may be set.
   */
  REDIS_SENTINELS: Type.String({ pattern: HOST_PORT_LIST, default: '' }),
  REDIS_SENTINEL_NAME: Type.String({ pattern: '^[A-Za-z0-9._-]{1,64}$', default: 'mymaster' }),
  REDIS_CLUSTER_NODES: Type.String({ pattern: HOST_PORT_LIST, default: '' }),
  REDIS_COMMAND_TIMEOUT_MS: Type.Integer({ minimum: 50, default: 2000 }),

  SALE_ITEMS: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 10_000 }),
  USER_LIMIT: Type.Integer({ minimum: 1, maximum: 1000, default: 10 }),
  CHECKOUT_TTL_SECONDS: Type.Integer({ minimum: 1, maximum: 3600, default: 600 }),
  /**
   * How long before XX:00 the next sale is created in Postgres and seeded in Redis. Preparing is
   * not opening (the clock opens it); the lead only has to outlast a stall or an outage at XX:59.
   */
  /**
   * Whose clock opens and closes the sales: `redis` (every instance measures its offset to Redis's
   * TIME each second, so instances agree on XX:00 whatever their own clocks say) or `local` (this
   * host's clock: instances must be kept in step by NTP).
   */
  CLOCK_SOURCE: Type.Union([Type.Literal('redis'), Type.Literal('local')], { default: 'redis' }),
  /**
   * The largest disagreement tolerated between the sale clock's source and the other clocks (this
   * host's, Postgres's), and the furthest the source may step back: beyond it, sale decisions are
   * refused with a 503 `clock_skew` until the clocks agree again (src/redis/clock.ts). 0 turns the
   * comparisons off (the clock still never runs backwards).
   */
  CLOCK_SKEW_MAX_MS: Type.Integer({ minimum: 0, maximum: 3_600_000, default: 1000 }),
  SALE_PREPARE_SECONDS: Type.Integer({ minimum: 1, maximum: 3000, default: 300 }),
  /** How often expired reservations are swept back into stock. */
  RELEASE_INTERVAL_MS: Type.Integer({ minimum: 50, default: 1000 }),

  /** Group commit of checkout attempts and purchases. */
  BATCH_MAX_ROWS: Type.Integer({ minimum: 1, maximum: 10_000, default: 500 }),
  BATCH_WINDOW_MS: Type.Integer({ minimum: 0, maximum: 1000, default: 2 }),
  BATCH_MAX_QUEUE: Type.Integer({ minimum: 1, default: 20_000 }),
  BATCH_MAX_INFLIGHT: Type.Integer({ minimum: 1, maximum: 50, default: 4 }),

  /**
   * Abuse limits on POST /checkout, counted in Redis (shared by every instance) per fixed window;
   * 0 turns a limit off. Defaults are far above any honest client so they never shape load:
   * a user can hold at most USER_LIMIT items, and the sell-out bench (5,000 random users at
   * ~10k req/s, about 2 req/s each) stays well under 50 per second; what it stops is one id
   * hammered in a loop, each try of which would otherwise cost a committed attempt row.
   * The per-user count is part of the checkout decision itself (one Redis call for both).
   */
  RATE_LIMIT_PER_USER: Type.Integer({ minimum: 0, default: 50 }),
  /**
   * Per client IP. Unset, it is off unless TRUST_PROXY is set (then DEFAULT_RATE_LIMIT_PER_IP):
   * without a trusted proxy naming the client, every client behind a load balancer shares its IP.
   * Set it explicitly when clients reach the service directly. Off, it costs nothing.
   */
  RATE_LIMIT_PER_IP: Type.Optional(Type.Integer({ minimum: 0 })),
  RATE_LIMIT_WINDOW_MS: Type.Integer({ minimum: 100, maximum: 3_600_000, default: 1000 }),
  /** Behind a proxy or load balancer: take the client IP from X-Forwarded-For (Fastify `trustProxy`). */
  TRUST_PROXY: Type.Boolean({ default: false }),

  /**
   * Pending connections the kernel queues for accept() (capped by net.core.somaxconn). Node's
   * default of 511 is below a crowd of 1,000 connecting at once: the rest see their SYN dropped
   * and retry after ~1 s, or fail.
   */
  LISTEN_BACKLOG: Type.Integer({ minimum: 1, maximum: 65_535, default: 4096 }),

  /**
   * The attempt spool (src/db/attempt-spool.ts): checkout attempts Postgres cannot take now wait here,
   * fsynced, until it can. One directory per instance (a subdirectory per DATABASE_SCHEMA is made
   * inside); point it at storage that outlives the process. Bounded by SPOOL_MAX_BYTES.
   */
  SPOOL_DIR: Type.String({ minLength: 1, default: '/tmp/flash-sale-spool' }),
  SPOOL_MAX_BYTES: Type.Integer({ minimum: 4096, default: 256 * 1024 * 1024 }),

  BODY_LIMIT_BYTES: Type.Integer({ minimum: 64, default: 1024 }),

  /**
   * How long start-up retries an unreachable Postgres or Redis (backoff, each wait logged) before it
   * exits 1: containers start in any order. 0 tries once.
   */
  STARTUP_WAIT_SECONDS: Type.Integer({ minimum: 0, maximum: 3600, default: 30 }),
  SHUTDOWN_GRACE_MS: Type.Integer({ minimum: 100, default: 10_000 })
})

export type Config = Static<typeof ConfigSchema>

/** Per-IP checkouts per window when TRUST_PROXY is set and RATE_LIMIT_PER_IP is not: 4× the per-user default. */
export const DEFAULT_RATE_LIMIT_PER_IP = 200

/** The per-IP limit in force (0 = off): see RATE_LIMIT_PER_IP. */
export const perIpRateLimit = (config: Config): number =>
  config.RATE_LIMIT_PER_IP ?? (config.TRUST_PROXY ? DEFAULT_RATE_LIMIT_PER_IP : 0)

/** Reads and validates configuration; `overrides` win over the environment (tests, bench). */
export function loadConfig (overrides: Partial<Config> = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const config = envSchema<Config>({
    schema: ConfigSchema,
    data: [{ ...env }, overrides],
    env: false,
    dotenv: false
  })
  if (config.REDIS_SENTINELS !== '' && config.REDIS_CLUSTER_NODES !== '') {
    throw new Error('env/REDIS_SENTINELS and env/REDIS_CLUSTER_NODES are exclusive: set at most one')
  }
  return config
}

/** For entry points (server, CLIs): the validated configuration, or a one-line reason and exit 1. */
export function configOrExit (overrides: Partial<Config> = {}): Config {
  try {
    return loadConfig(overrides)
  } catch (error) {
    console.error(`Invalid configuration: ${(error as Error).message}`)
    process.exit(1)
  }
}
