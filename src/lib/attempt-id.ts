import { random16 } from './random-pool.js'

/**
 * A checkout attempt's id, decided by the service so that writing the attempt again (the spool's
 * replay) is idempotent: a UUIDv7 (RFC 9562; 48-bit wall-clock milliseconds, then 74 random bits),
 * so ids of one instance grow with time and the unique index is filled at its right edge. As 32
 * hex digits, which Postgres's uuid type reads as they are.
 */
export function newAttemptId (now = Date.now()): string {
  const id = random16()
  id.writeUIntBE(now, 0, 6)
  id[6] = 0x70 | ((id[6] as number) & 0x0f) // version 7
  id[8] = 0x80 | ((id[8] as number) & 0x3f) // variant 10
  return id.toString('hex')
}
