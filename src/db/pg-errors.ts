import pg from 'pg'
import { ServiceUnavailable } from '../sale/errors.js'

/**
 * What a failed write did in Postgres, as far as the error can tell:
 * - `not_sent`: the statement never left the service (no connection could be had, the writer's
 *   queue refused it): nothing can have committed.
 * - `rolled_back`: Postgres answered the statement with an error: its transaction rolled back.
 * - `unknown`: the connection was lost, or the client stopped waiting, while the statement was out:
 *   it may have committed, or may still commit. Only a later read (behind a fence) can tell.
 */
export type FailedWrite = 'not_sent' | 'rolled_back' | 'unknown'

/**
 * Codes Postgres sends only while a connection is being set up, before any statement: the server
 * starting up or shutting down (57P03), too many connections, authentication, no such database;
 * 08001 and 08004 (a client or a pooler that could not establish the connection).
 */
const AT_CONNECT = new Set(['57P03', '53300', '28000', '28P01', '3D000', '08001', '08004'])

/** Socket errors of a connection attempt: no statement was ever written. */
const CONNECT_ERRNOS = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN'])

/**
 * pg's own wordings for a connection that was never established (pg-pool: no client came in time;
 * a new client's connect timed out) or a client that refused the query before writing it.
 */
const NOT_SENT_MESSAGES = [
  'timeout exceeded when trying to connect',
  'Connection terminated due to connection timeout',
  'Client has encountered a connection error and is not queryable',
  'Client was closed and is not queryable'
]

/** The error underneath the service's own wrappings (the batch writer's `write_failed`). */
const rootCause = (error: unknown): unknown => {
  let cause = error
  while (cause instanceof ServiceUnavailable && cause.cause !== undefined) cause = cause.cause
  return cause
}

/**
 * Classifies the error of a failed write. Errs towards `unknown`: taking a write that might have
 * committed for one that did not would undo a sale behind a commit, while the reverse only costs
 * a read once Postgres answers again.
 */
export function failedWrite (error: unknown): FailedWrite {
  const cause = rootCause(error)
  // The writer refused the row before it was queued (queue full, shutting down).
  if (cause instanceof ServiceUnavailable) return 'not_sent'
  if (cause instanceof pg.DatabaseError) {
    const code = cause.code ?? ''
    if (AT_CONNECT.has(code)) return 'not_sent'
    // The session ended under the statement: an administrator or a fast shutdown (57P01), a crash
    // of another backend (57P02), any FATAL or PANIC, a connection failure (class 08).
    if (code.startsWith('08') || code.startsWith('57P') || cause.severity === 'FATAL' || cause.severity === 'PANIC') return 'unknown'
    return 'rolled_back'
  }
  if (!(cause instanceof Error)) return 'unknown'
  if (CONNECT_ERRNOS.has((cause as NodeJS.ErrnoException).code ?? '')) return 'not_sent'
  if (NOT_SENT_MESSAGES.some((message) => cause.message === message)) return 'not_sent'
  // "Connection terminated unexpectedly", ECONNRESET, EPIPE, "Query read timeout" (the client's
  // query_timeout: the server may still be running the statement), anything else.
  return 'unknown'
}

/** Postgres refused the data itself (classes 22 and 23: data exception, integrity violation): a retry cannot help. */
export function refusedRow (error: unknown): boolean {
  const cause = rootCause(error)
  return cause instanceof pg.DatabaseError && /^2[23]/.test(cause.code ?? '')
}
