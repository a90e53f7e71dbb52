import assert from 'node:assert/strict'
import { createServer, connect, type Socket } from 'node:net'
import { test, type TestContext } from 'node:test'
import pg from 'pg'
import { loadConfig } from '../../src/config.js'
import { failedWrite, refusedRow } from '../../src/db/pg-errors.js'
import { ServiceUnavailable } from '../../src/sale/errors.js'

/**
 * Each class of failure as pg reports it, raised for real against the loopback Postgres where that
 * is cheap; the codes Postgres sends only while it starts or stops, or that a pooler sends, are
 * built as pg parses them off the wire (a DatabaseError with the server's code and severity).
 */

const { DATABASE_URL } = loadConfig()
const target = new URL(DATABASE_URL)

/** The error `work` rejects with (it must reject). */
async function errorOf (work: () => Promise<unknown>): Promise<unknown> {
  try {
    await work()
  } catch (error) {
    return error
  }
  return assert.fail('expected a failure')
}

/** A query's error, captured as soon as it happens (no unhandled rejection while the test acts meanwhile). */
const failureOf = (running: Promise<unknown>): Promise<unknown> => running.then(() => assert.fail('expected a failure'), (error: unknown) => error)

async function client (t: TestContext, config: pg.ClientConfig = {}): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: DATABASE_URL, ...config })
  c.on('error', () => {}) // the session may end under the test
  await c.connect()
  t.after(() => c.end().catch(() => {}))
  return c
}

/** A loopback TCP server (closed with the test); `onSocket` decides what each connection gets. */
async function tcpServer (t: TestContext, onSocket: (socket: Socket) => void): Promise<number> {
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    onSocket(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.after(() => {
    for (const socket of sockets) socket.destroy()
    server.close()
  })
  return (server.address() as { port: number }).port
}

const serverError = (code: string, severity: string, message: string): pg.DatabaseError => {
  const error = new pg.DatabaseError(message, message.length, 'error')
  error.code = code
  error.severity = severity
  return error
}

test('57P01 (pg_terminate_backend mid-statement): unknown outcome', async (t) => {
  const victim = await client(t)
  const killer = await client(t)
  const pid = (await victim.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid
  const failed = failureOf(victim.query('SELECT pg_sleep(5)'))
  await new Promise((resolve) => setTimeout(resolve, 100))
  await killer.query('SELECT pg_terminate_backend($1)', [pid])
  const error = await failed
  assert.ok(error instanceof pg.DatabaseError, String(error))
  assert.equal(error.code, '57P01')
  assert.equal(failedWrite(error), 'unknown')
  assert.equal(failedWrite(new ServiceUnavailable('write_failed', { cause: error })), 'unknown', 'through the batch writer\'s wrapping too')
  assert.equal(refusedRow(error), false)
})

test('57P03 (starting up, shutting down: refused at connect), 53300 and the auth class: never sent', () => {
  assert.equal(failedWrite(serverError('57P03', 'FATAL', 'the database system is shutting down')), 'not_sent')
  assert.equal(failedWrite(serverError('57P03', 'FATAL', 'the database system is starting up')), 'not_sent')
  assert.equal(failedWrite(new ServiceUnavailable('write_failed', { cause: serverError('57P03', 'FATAL', 'the database system is not yet accepting connections') })), 'not_sent')
  assert.equal(failedWrite(serverError('53300', 'FATAL', 'sorry, too many clients already')), 'not_sent')
  assert.equal(failedWrite(serverError('28P01', 'FATAL', 'password authentication failed for user "x"')), 'not_sent')
})

test('class 08 (connection exception) mid-statement, 57P02 and any other FATAL: unknown; 08001/08004 at connect: never sent', () => {
  assert.equal(failedWrite(serverError('08006', 'FATAL', 'connection failure')), 'unknown')
  assert.equal(failedWrite(serverError('08P01', 'ERROR', 'server conn crashed?')), 'unknown')
  assert.equal(failedWrite(serverError('57P02', 'FATAL', 'terminating connection because of crash of another server process')), 'unknown')
  assert.equal(failedWrite(serverError('XX000', 'PANIC', 'could not write to file')), 'unknown')
  assert.equal(failedWrite(serverError('08001', 'FATAL', 'could not establish connection')), 'not_sent')
  assert.equal(failedWrite(serverError('08004', 'FATAL', 'server rejected the connection')), 'not_sent')
})

test('ECONNREFUSED (nothing listens): never sent', async () => {
  // A port that was just free: its listener is closed again before the connect.
  const closed = await new Promise<number>((resolve) => {
    const probe = createServer()
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number }
      probe.close(() => resolve(port))
    })
  })
  const error = await errorOf(() => new pg.Client({ host: '127.0.0.1', port: closed, user: 'postgres' }).connect())
  assert.equal((error as NodeJS.ErrnoException).code, 'ECONNREFUSED')
  assert.equal(failedWrite(error), 'not_sent')
  assert.equal(failedWrite(new ServiceUnavailable('write_failed', { cause: error })), 'not_sent')
})

test('the pool\'s connect timeout (no free client in time; a new connection not established in time): never sent', async (t) => {
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1, connectionTimeoutMillis: 150 })
  t.after(() => pool.end())
  const held = await pool.connect()
  const waited = await errorOf(() => pool.query('SELECT 1'))
  held.release()
  assert.equal((waited as Error).message, 'timeout exceeded when trying to connect')
  assert.equal(failedWrite(waited), 'not_sent')

  // A server that accepts the TCP connection and never answers the startup message.
  const silent = await tcpServer(t, () => {})
  const silentPool = new pg.Pool({ host: '127.0.0.1', port: silent, user: 'postgres', max: 1, connectionTimeoutMillis: 150 })
  t.after(() => silentPool.end())
  const timedOut = await errorOf(() => silentPool.query('SELECT 1'))
  assert.equal((timedOut as Error).message, 'Connection terminated due to connection timeout')
  assert.equal(failedWrite(timedOut), 'not_sent')
})

test('the batch writer refusing a row (queue full, shutting down): never sent', () => {
  assert.equal(failedWrite(new ServiceUnavailable('write_queue_full')), 'not_sent')
  assert.equal(failedWrite(new ServiceUnavailable('shutting_down')), 'not_sent')
})

test('23505 (unique violation) and 57014 (statement_timeout): Postgres answered, rolled back; only the former is a refused row', async (t) => {
  const c = await client(t)
  await c.query('CREATE TEMP TABLE once (n int PRIMARY KEY)')
  await c.query('INSERT INTO once VALUES (1)')
  const duplicate = await errorOf(() => c.query('INSERT INTO once VALUES (1)'))
  assert.equal((duplicate as pg.DatabaseError).code, '23505')
  assert.equal(failedWrite(duplicate), 'rolled_back')
  assert.equal(refusedRow(duplicate), true)
  assert.equal(refusedRow(new ServiceUnavailable('write_failed', { cause: duplicate })), true)

  await c.query('SET statement_timeout = 50')
  const cancelled = await errorOf(() => c.query('SELECT pg_sleep(1)'))
  assert.equal((cancelled as pg.DatabaseError).code, '57014')
  assert.equal(failedWrite(cancelled), 'rolled_back')
  assert.equal(refusedRow(cancelled), false)
})

test('the client\'s query timeout (the server may still run the statement): unknown', async (t) => {
  const c = await client(t, { query_timeout: 100 })
  const error = await errorOf(() => c.query('SELECT pg_sleep(1)'))
  assert.equal((error as Error).message, 'Query read timeout')
  assert.equal(failedWrite(error), 'unknown')
})

test('the connection cut mid-statement ("Connection terminated unexpectedly"): unknown', async (t) => {
  // A TCP relay to Postgres, cut while the statement runs.
  const relayed = new Set<Socket>()
  const port = await tcpServer(t, (socket) => {
    const upstream = connect(Number(target.port || 5432), target.hostname)
    upstream.on('error', () => {})
    relayed.add(socket).add(upstream)
    socket.pipe(upstream).pipe(socket)
  })
  const c = await client(t, { connectionString: undefined, host: '127.0.0.1', port, user: target.username || 'postgres', database: target.pathname.slice(1) || 'postgres' })
  const failed = failureOf(c.query('SELECT pg_sleep(1)'))
  await new Promise((resolve) => setTimeout(resolve, 100))
  for (const socket of relayed) socket.destroy()
  const error = await failed
  assert.match((error as Error).message, /^Connection terminated unexpectedly|ECONNRESET/)
  assert.equal(failedWrite(error), 'unknown')
})

test('anything unrecognised, or not an Error: unknown', () => {
  assert.equal(failedWrite(new Error('write EPIPE')), 'unknown')
  assert.equal(failedWrite(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' })), 'unknown')
  assert.equal(failedWrite('a string'), 'unknown')
  assert.equal(failedWrite(undefined), 'unknown')
})
