import { Server, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { ServiceUnavailable } from '../src/sale/errors.js'

/** The most the drain waits for sockets to go quiet (within SHUTDOWN_GRACE_MS). */
const DRAIN_MAX_MS = 1000
const DRAIN_POLL_MS = 20

/** The reply to the last request read on a socket (null before the first): one property write per request, no extra hook. */
const kLast = Symbol('last reply')
type TrackedSocket = Socket & { [kLast]?: FastifyReply | null }

const socketOf = (request: FastifyRequest): TrackedSocket | null => request.raw.socket as TrackedSocket | null

/** Makes `reply` the one whose response closes its socket (Node then ends it after sending). */
const closeAfter = (reply: FastifyReply): void => { if (!reply.raw.headersSent) reply.header('connection', 'close') }

/**
 * Graceful drain, in the order that answers every request the service has read. Closing a
 * keep-alive socket under a client that is sending on it resets that request (ECONNRESET); so on
 * close (the preClose hook):
 * 1. the listener closes at once: new connections are refused, none is half taken;
 * 2. every request read from now on is answered 503 `shutting_down` (the checkout route records
 *    it), and the last response on each socket says `Connection: close`, so its client sends no
 *    further request on it and Node closes it after that response;
 * 3. idle keep-alive sockets are not closed under their clients: the drain waits (at most
 *    min(1 s, SHUTDOWN_GRACE_MS / 2)) for each to be used (answered 503 and closed, as above) or
 *    closed by its client, and for every request read to be answered. Closing idle sockets early
 *    was measured to be worse: a client pool whose sockets the drain closes picks an idle one to
 *    send on, at the very moment it would be closed. Then Fastify closes what is still idle and
 *    waits for the responses being written (a /sale/events stream ends in its own preClose).
 * What remains is the race no server avoids: a client that sends on a socket it left idle for the
 * whole drain at the very instant it is closed, and a connection the kernel completed but the
 * listener had not accepted yet when it closed.
 */
export default fp(async (fastify) => {
  const { config } = fastify
  let closing = false
  const sockets = new Set<TrackedSocket>()
  fastify.server.on('connection', (socket: TrackedSocket) => {
    socket[kLast] = null
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })

  fastify.addHook('onRequest', (request, reply, done) => {
    const socket = socketOf(request)
    if (socket !== null && socket[kLast] !== undefined) {
      if (closing) {
        // Only the last read closes: a response with `Connection: close` drops those of requests
        // read after it on the same socket (a pipelining client).
        if (socket[kLast] !== null && !socket[kLast].raw.headersSent) socket[kLast].removeHeader('connection')
        closeAfter(reply)
      }
      socket[kLast] = reply
    }
    done(closing ? new ServiceUnavailable('shutting_down') : undefined)
  })
  fastify.addHook('preClose', async () => {
    closing = true
    // Requests read before the drain and not answered yet: their response is the last on its socket.
    for (const socket of sockets) if (socket[kLast]) closeAfter(socket[kLast])
    if (!fastify.server.listening) return
    // net's close, not http's: http's would also destroy the idle keep-alive sockets right away.
    Server.prototype.close.call(fastify.server)
    const deadline = Date.now() + Math.min(DRAIN_MAX_MS, config.SHUTDOWN_GRACE_MS / 2)
    // Waits for sockets with a request to answer, or idle ones a client may still send on. Not
    // for a response that is only being written (a /sale/events stream): no client sends there.
    // (Idle: no request yet, or the last one's response is written in full.)
    const inUse = (socket: TrackedSocket) => {
      const last = socket[kLast]
      return last === null || last === undefined || last.raw.writableFinished || !last.raw.headersSent
    }
    while (Date.now() < deadline && [...sockets].some(inUse)) await sleep(DRAIN_POLL_MS)
    // A response begun before the drain (a slow one, a /sale/events stream) carried no
    // `Connection: close`: its socket closes as soon as it ends rather than idling out a keep-alive.
    fastify.server.keepAliveTimeout = 1
  })
}, { name: 'drain', dependencies: ['config'] })
