import { ServiceUnavailable } from '../sale/errors.js'

/** The part of an ioredis client (standalone, Sentinel or Cluster) the readiness gate watches. */
export interface RedisLike {
  readonly status: string
  ping (): Promise<unknown>
}

/**
 * Whether Redis can be asked right now, known without asking it: the client is connected and
 * ready, and the last heartbeat PING was answered. Requests check it first and answer 503 at
 * once while Redis is known down, instead of each waiting out a reconnect or a command timeout.
 *
 * A dead Redis (killed, refused, unreachable) is seen at once: the client leaves `ready` when its
 * socket closes. A Redis that hangs with its socket open (SIGSTOP, a full disk fsync, a partition
 * that drops packets) is seen by the heartbeat: one PING every `heartbeatMs`, failed by the
 * client's command timeout. Requests go through again from the first PING answered: at most one
 * heartbeat after the client is ready again.
 */
export class RedisReadiness {
  readonly #client: RedisLike
  readonly #timer: NodeJS.Timeout
  #heartbeatFailed = false
  #pinging = false

  constructor (client: RedisLike, heartbeatMs: number) {
    this.#client = client
    this.#timer = setInterval(() => { this.#heartbeat() }, heartbeatMs)
    this.#timer.unref()
  }

  /** True while Redis is known to be unable to answer. */
  get down (): boolean {
    return this.#client.status !== 'ready' || this.#heartbeatFailed
  }

  /** Throws the 503 of a known Redis outage (the cause names Redis, for the metrics). */
  assertUp (): void {
    if (this.down) throw new ServiceUnavailable('dependency_failed', { cause: new RedisUnavailableError() })
  }

  #heartbeat (): void {
    // One PING at a time: a hanging Redis must not pile them up.
    if (this.#pinging || this.#client.status !== 'ready') return
    this.#pinging = true
    this.#client.ping().then(
      () => { this.#heartbeatFailed = false },
      () => { this.#heartbeatFailed = true }
    ).finally(() => { this.#pinging = false })
  }

  close (): void {
    clearInterval(this.#timer)
  }
}

/** Why a request was not even sent to Redis: the gate knew it was down. */
export class RedisUnavailableError extends Error {
  constructor () {
    super('Redis is known to be down (not connected, or its last heartbeat failed)')
    this.name = 'RedisUnavailableError'
  }
}
