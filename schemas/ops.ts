import { Type } from '@sinclair/typebox'
import { InternalError, RetryAfter, SaleCounts, SaleUnavailableError, Timestamp, UnavailableError } from './common.js'

const Dependency = Type.Object({
  ok: Type.Boolean(),
  latency_ms: Type.Number({ description: 'Round trip of the probe' }),
  error: Type.Optional(Type.String({ description: 'Why the probe failed' }))
})

const SpoolHealth = Type.Object({
  ok: Type.Boolean({ description: 'False from a checkout attempt the spool could not keep (full, or its disk refused the write) until a write succeeds or a replay frees room; does not change the status' }),
  bytes: Type.Integer({ description: 'Spooled attempts not written to Postgres yet' }),
  dropped: Type.Integer({ description: 'Attempts answered 503 that the spool could not keep since start: unrecorded' }),
  quarantined: Type.Integer({ description: 'Malformed spool lines moved aside unreplayed since start' }),
  error: Type.Optional(Type.String({ description: 'Why the last attempt was dropped, while `ok` is false' }))
}, { description: 'The attempt spool, where checkout attempts wait that Postgres could not take' })

export const HealthResponse = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('unavailable')]),
  postgres: Dependency,
  redis: Dependency,
  spool: SpoolHealth
}, { title: 'HealthResponse' })

export const healthSchema = {
  operationId: 'getHealth',
  summary: 'Liveness and dependency health',
  description: 'Probes Postgres and Redis separately; 503 when either is down.',
  tags: ['ops'],
  response: {
    200: { ...HealthResponse, description: 'Postgres and Redis both answer.' },
    500: InternalError,
    503: Type.Union([HealthResponse, UnavailableError], {
      description: 'Postgres or Redis (or both) is down (the health body), or the service is shutting down (the error body).',
      headers: { 'retry-after': RetryAfter }
    })
  }
}

const SaleState = Type.Composite([SaleCounts, Type.Object({
  user_limit: Type.Integer(),
  checkout_ttl_seconds: Type.Integer()
})])

export const ServiceDescription = Type.Object({
  service: Type.String(),
  version: Type.String(),
  description: Type.String(),
  now: Timestamp,
  sale: SaleState,
  next_sale_at: Timestamp,
  next_sale: Type.Object({
    id: Type.Union([Type.Integer(), Type.Null()], { description: 'Its id once prepared (SALE_PREPARE_SECONDS before it opens), else null' }),
    opens_at: Timestamp,
    opens_in_seconds: Type.Integer({ description: 'Countdown to `opens_at`, rounded up' }),
    prepared: Type.Boolean({ description: 'Created in Postgres and seeded in Redis: it opens on the clock, whatever happens to timers' })
  }),
  endpoints: Type.Record(Type.String(), Type.String())
}, { title: 'ServiceDescription', description: 'The service and its current sale.' })

export const rootSchema = {
  operationId: 'getService',
  summary: 'Describe the service and the current sale',
  description: 'Name, version, the current sale (id, `opens_at`/`closes_at`, `items`, `sold`, `held` by live checkout codes, `left`) and the next sale: when it opens and whether it is prepared.',
  tags: ['ops'],
  response: { 200: ServiceDescription, 500: InternalError, 503: SaleUnavailableError }
}
