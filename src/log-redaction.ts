/**
 * Checkout codes are bearer secrets: whoever reads one can buy its item. They reach log lines as
 * `?code=` in request URLs (LOG_REQUESTS=true), as a `code` field of the service's error logs and
 * inside Postgres error details (`Key (code, sale_starts_at)=(..., ...) already exists`: the unique
 * keys and foreign keys of the partitioned tables carry the partition key). This pattern finds a 22-character
 * code after each of those markers; the marker is kept so a line still says what was there.
 */
const CHECKOUT_CODE_IN_LOG = /(code=|"(?:checkout_)?code":"|\(code(?:, \w+)*\)=\()[A-Za-z0-9_-]{22}(?![A-Za-z0-9_-])/g

/** pino's `hooks.streamWrite`: every serialized log line passes here on its way out. */
export function redactCheckoutCodes (line: string): string {
  // The common line has no code at all; a substring test is cheaper than the replace.
  return line.includes('code') ? line.replace(CHECKOUT_CODE_IN_LOG, '$1[redacted]') : line
}
