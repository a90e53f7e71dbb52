import { Type, type TProperties, type TSchema } from '@sinclair/typebox'
import { REFUSALS, UNAVAILABLE } from '../src/sale/errors.js'

export const Item = Type.Object({
  id: Type.Integer({ minimum: 1, examples: [42] }),
  name: Type.String({ examples: ['Item #42'] }),
  description: Type.String(),
  price: Type.Number({ description: 'Price in currency units, two decimals', examples: [199.99] })
}, { title: 'Item' })

/** ISO-8601 UTC timestamp. */
export const Timestamp = Type.String({ format: 'date-time', examples: ['2026-11-25T14:59:59.000Z'] })

/** A sale's window and live counts (src/http/presenters.ts `presentSaleCounts`). */
export const SaleCounts = Type.Object({
  id: Type.Integer(),
  opens_at: Timestamp,
  closes_at: Timestamp,
  items: Type.Integer({ description: 'Items in this sale' }),
  sold: Type.Integer(),
  held: Type.Integer({ description: 'Items held by live, unredeemed checkout codes' }),
  left: Type.Integer({ description: 'Items still available to check out' })
})

/**
 * Canonical decimal integers from 1 to 2147483647 (a Postgres int4): `^[1-9][0-9]{0,9}$` cut at the
 * int4 maximum, digit by digit. No sign, leading zero, exponent, radix prefix, fraction or
 * whitespace, so `0x10`, `1e3`, `+7`, `01` or `%098` are refused rather than read as another number.
 * test/api/request-grammar.test.ts checks it against arithmetic.
 */
export const ID_PATTERN = '^(?:[1-9][0-9]{0,8}|1[0-9]{9}|20[0-9]{8}|21[0-3][0-9]{7}|214[0-6][0-9]{6}|2147[0-3][0-9]{5}|' +
  '21474[0-7][0-9]{4}|214748[0-2][0-9]{3}|2147483[0-5][0-9]{2}|21474836[0-3][0-9]|214748364[0-7])$'

/**
 * An item id as it arrives in a query string: a string of the id grammar (the route reads it as a
 * number). `x-error-message` is what a failing value is told (src/http/validation.ts).
 */
export const ItemId = Type.String({
  pattern: ID_PATTERN,
  description: 'Item id, 1..SALE_ITEMS, in canonical decimal (no sign, leading zero, exponent or spaces)',
  'x-error-message': 'must be an integer from 1 to 2147483647 in plain decimal digits'
})

/**
 * Every stable `error` code the service answers with (plugins/errors.ts maps each error to one),
 * with a typical message for the examples. Messages are for humans and may change; codes do not.
 */
export const ERROR_EXAMPLES = {
  invalid_request: 'querystring/user_id must be 1-64 characters of A-Z a-z 0-9 . _ : @ -',
  invalid_json: "Body is not valid JSON but content-type is set to 'application/json'",
  invalid_content_length: 'Request body size did not match Content-Length',
  bad_request: 'The request could not be read.',
  payload_too_large: 'Request body is too large',
  headers_too_large: 'The request headers are larger than the server accepts.',
  request_timeout: 'The request was not received in time.',
  unsupported_media_type: 'Unsupported Media Type',
  rate_limited: 'Too many checkout attempts from this user; retry in 1 s.',
  not_found: 'No route for GET /no-such-path',
  method_not_allowed: 'PUT is not allowed on /health: use GET or HEAD',
  service_unavailable: 'A dependency is unavailable; retry shortly.',
  clock_skew: UNAVAILABLE.clock_skew,
  internal_error: 'Something went wrong on our side.',
  ...REFUSALS
} as const satisfies Record<string, string>

export type ErrorCode = keyof typeof ERROR_EXAMPLES

/**
 * The error body of one status of one route: `error` is the enum of the codes it can carry (so
 * SDKs get a union type), with one named example per code. The enum must list every code sent
 * with that status: test/api/openapi.test.ts checks them against plugins/errors.ts.
 */
export function errorResponse<const C extends ErrorCode, F extends TProperties = Record<never, TSchema>> (
  description: string,
  codes: readonly [C, ...C[]],
  { headers, fields }: { headers?: Record<string, TSchema>, fields?: F } = {}
) {
  return Type.Object({
    error: Type.Unsafe<C>({ type: 'string', enum: [...codes], description: 'Stable machine-readable error code' }),
    message: Type.String({ description: 'Human-readable explanation (may change; match on `error`)' }),
    ...(fields as F)
  }, {
    description,
    'x-examples': Object.fromEntries(codes.map((code) => [code, { summary: code, value: { error: code, message: ERROR_EXAMPLES[code] } }])),
    ...(headers && { headers })
  })
}

export const RetryAfter = Type.Integer({ minimum: 1, description: 'Seconds to wait before retrying' })

/** Statuses whose codes are the same on every route that can answer them. */
export const BadRequestError = errorResponse(
  'Malformed request: `invalid_request` (a parameter or the body fails its schema in this document), ' +
  '`invalid_json` (unparsable JSON body), `invalid_content_length` (body shorter or longer than Content-Length), ' +
  '`bad_request` (any other unreadable request).',
  ['invalid_request', 'invalid_json', 'invalid_content_length', 'bad_request'])
/**
 * 422: the request matches every schema of the operation but breaks a rule between parameters
 * (or between the query and the body) that OpenAPI cannot state: an OpenAPI parameter is described
 * on its own, so "one of `id` and `item_id`" is not expressible (@fastify/swagger renders a
 * querystring object's properties as separate parameters and drops an object-level `anyOf`).
 * The route enforces such rules and the operation's description states them. A 400 is thus only
 * ever for what the document itself refuses.
 */
export const unprocessableError = (description: string) => errorResponse(description, ['invalid_request'])

/** A known path asked with a method it does not serve (plugins/errors.ts); `Allow` lists those it does. */
export const MethodNotAllowedError = errorResponse('This path does not serve that method: `Allow` lists the methods it does.',
  ['method_not_allowed'], { headers: { allow: Type.String({ description: 'The methods the path serves, e.g. `GET, HEAD`' }) } })
export const NotFoundError = errorResponse('No route has this path.', ['not_found'])

export const RequestTimeoutError = errorResponse('The request (headers or body) did not arrive within the server\'s timeout; the connection is closed.',
  ['request_timeout'])
export const HeadersTooLargeError = errorResponse('The request headers exceed the server\'s limit (16 KiB); the connection is closed.',
  ['headers_too_large'])
export const PayloadTooLargeError = errorResponse('The body is larger than `BODY_LIMIT_BYTES` (1024 by default).', ['payload_too_large'])
export const UnsupportedMediaTypeError = errorResponse('The body is not `application/json`.', ['unsupported_media_type'])
export const RateLimitedError = errorResponse('An abuse limit (per user or per client IP) is exceeded; retry after `Retry-After` seconds.',
  ['rate_limited'], { headers: { 'retry-after': RetryAfter } })
export const UnavailableError = errorResponse('Postgres or Redis is down or saturated, or the service is shutting down; ' +
  'nothing was done. Retry after `Retry-After` seconds.', ['service_unavailable'], { headers: { 'retry-after': RetryAfter } })
/** The 503 of the routes that pick the current sale: they also refuse while the clocks disagree. */
export const SaleUnavailableError = errorResponse('`service_unavailable`: Postgres or Redis is down or saturated, or the service is ' +
  'shutting down. `clock_skew`: the service\'s clocks (Redis\'s, the host\'s, Postgres\'s) disagree by more than the configured ' +
  'bound, or a clock stepped back, so no sale decision is made until they agree again. Either way nothing was done. Retry after ' +
  '`Retry-After` seconds.', ['service_unavailable', 'clock_skew'], { headers: { 'retry-after': RetryAfter } })
export const InternalError = errorResponse('A bug on our side.', ['internal_error'])
