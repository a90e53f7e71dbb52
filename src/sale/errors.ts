/**
 * Domain errors. Services throw these; the HTTP layer (plugins/errors.ts) maps each
 * code to a status. Codes are a stable, machine-readable contract.
 */
export const REFUSALS = {
  no_active_sale: 'No sale is open right now; the next one opens at the top of the hour.',
  unknown_item: 'This item is not part of the current sale.',
  sold_out: 'The current sale is sold out.',
  item_sold: 'This item has already been sold.',
  item_reserved: 'This item is reserved by another checkout; try another item or come back when the reservation expires.',
  already_reserved_by_you: 'You already hold this item: redeem the checkout code you were given before it expires.',
  user_limit_reached: 'This user already holds or has bought the maximum number of items in this sale.',
  unknown_code: 'This checkout code does not exist.',
  code_expired: 'This checkout code has expired; its item went back on sale.',
  code_used: 'This checkout code has already been redeemed.',
  sale_over: 'The sale this checkout code belongs to is over.'
} as const

export type RefusalCode = keyof typeof REFUSALS

/**
 * A business rule said no: the request was valid, the answer is a refusal. Refusals are the
 * common case under a stampede and need no stack trace, whose capture dominated their cost.
 */
export class SaleRefusal extends Error {
  readonly code: RefusalCode
  /** Set when waiting helps (a sale not open yet): sent as Retry-After. */
  readonly retryAfterSeconds: number | undefined
  /**
   * What a client whose earlier answer was lost needs to carry on: with `already_reserved_by_you`
   * the user's live hold (its code buys), with `code_used` the committed purchase the code made.
   */
  readonly hold: { code: string, expiresAt: number } | undefined
  readonly purchase: { purchaseId: number, purchasedAt: number } | undefined

  constructor (code: RefusalCode, details: {
    message?: string
    retryAfterSeconds?: number
    hold?: SaleRefusal['hold']
    purchase?: SaleRefusal['purchase']
  } = {}) {
    const stackTraceLimit = Error.stackTraceLimit
    Error.stackTraceLimit = 0
    super(details.message ?? REFUSALS[code])
    Error.stackTraceLimit = stackTraceLimit
    this.code = code
    this.retryAfterSeconds = details.retryAfterSeconds
    this.hold = details.hold
    this.purchase = details.purchase
    this.name = 'SaleRefusal'
  }
}

/** Why the service cannot answer right now; each is a 503 `service_unavailable` with Retry-After. */
export const UNAVAILABLE = {
  dependency_failed: 'A dependency is unavailable; retry shortly.',
  write_failed: 'The database did not commit this request; retry shortly.',
  write_queue_full: 'The database is falling behind; retry shortly.',
  sale_restoring: 'The sale state is being restored; retry shortly.',
  purchase_settling: 'An earlier purchase of this code is being settled; retry shortly.',
  sale_unprepared: 'This hour\'s sale could not be prepared yet (a dependency is unavailable); retry shortly.',
  shutting_down: 'The service is shutting down; retry shortly.',
  clock_skew: 'The service\'s clocks disagree (Redis\'s, this host\'s, Postgres\'s): no sale decision is made until they agree again; retry shortly.'
} as const

export type UnavailableReason = keyof typeof UNAVAILABLE

/**
 * A dependency is down or saturated, the clocks disagree, or the service is stopping: the client
 * should retry shortly. The answer's `error` is `service_unavailable`, except for a clock skew,
 * which has a code of its own (`clock_skew`): it lasts until an operator fixes a clock.
 */
export class ServiceUnavailable extends Error {
  readonly retryAfterSeconds = 1

  constructor (readonly reason: UnavailableReason, options?: ErrorOptions) {
    super(UNAVAILABLE[reason], options)
    this.name = 'ServiceUnavailable'
  }

  /** The stable `error` code of the 503 answer. */
  get errorCode (): 'service_unavailable' | 'clock_skew' {
    return this.reason === 'clock_skew' ? 'clock_skew' : 'service_unavailable'
  }
}

/**
 * The request matches its schemas but breaks a rule between parameters that OpenAPI cannot state
 * (neither of two aliases, or both with different values): 422 `invalid_request`.
 */
export class InvalidRequest extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InvalidRequest'
  }
}

/**
 * The caller exceeded an abuse limit (plugins/rate-limit.ts). Like a refusal it is cheap: no
 * stack trace, since a flood of them is exactly when it is thrown.
 */
export class RateLimited extends Error {
  constructor (message: string, readonly retryAfterSeconds: number) {
    const stackTraceLimit = Error.stackTraceLimit
    Error.stackTraceLimit = 0
    super(message)
    Error.stackTraceLimit = stackTraceLimit
    this.name = 'RateLimited'
  }
}

/** Postgres or Redis failed underneath: the client gets a 503 with Retry-After, not a 500. */
export const toUnavailable = (error: unknown): never => {
  if (error instanceof ServiceUnavailable || error instanceof SaleRefusal) throw error
  throw new ServiceUnavailable('dependency_failed', { cause: error })
}
