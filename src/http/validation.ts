import type { FastifyServerOptions } from 'fastify'

/** Schema keyword (also an OpenAPI `x-` extension) holding what a value that fails its schema is told. */
const ERROR_MESSAGE = 'x-error-message'

/**
 * Request validation as the schemas in `schemas/` declare it (Fastify's ajv). Nothing is coerced:
 * every query parameter is declared as the string grammar it must match (an id is `^[1-9][0-9]*$`
 * within range, not whatever JavaScript's `Number()` can read), and an array is never taken for a
 * scalar, so `?id=1&id=2` and `{"checkout_code": ["..."]}` are errors, not guesses. `verbose` gives
 * the formatter the failing schema and value.
 */
export const ajvOptions = {
  customOptions: { coerceTypes: false, verbose: true, keywords: [ERROR_MESSAGE] }
} satisfies FastifyServerOptions['ajv']

interface ValidationFailure {
  instancePath: string
  keyword: string
  message?: string
  parentSchema?: Record<string, unknown>
  data?: unknown
}

/**
 * The message of a 400 `invalid_request`, naming the parameter: `querystring/id is repeated: give
 * it once`, or the schema's own `x-error-message`, or ajv's wording when the schema has none.
 */
export function formatValidationErrors (errors: ValidationFailure[], dataVar: string): Error {
  // ajv stops at the first failing keyword (allErrors is off): the last error is that failure
  // (before it, only the branches of a failed union, which no request schema has).
  const error = errors[errors.length - 1] as ValidationFailure
  const where = `${dataVar}${error.instancePath}`
  // A query string's values are strings; an array is the same parameter given more than once.
  if (dataVar === 'querystring' && Array.isArray(error.data)) return new Error(`${where} is repeated: give it once`)
  const declared = error.parentSchema?.[ERROR_MESSAGE]
  return new Error(`${where} ${typeof declared === 'string' ? declared : error.message}`)
}
