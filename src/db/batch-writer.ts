import { ServiceUnavailable } from '../sale/errors.js'

export interface BatchWriterOptions<Row, Result> {
  /** Writes a whole batch in one statement; resolves with one result per row, in order. */
  write: (rows: Row[]) => Promise<Result[]>
  /** Flush as soon as this many rows wait. */
  maxRows: number
  /** Flush rows that waited this long even if the batch is not full. */
  windowMs: number
  /** Rows allowed to wait; past it `push` fails fast with ServiceUnavailable. */
  maxQueue: number
  /** Batches written concurrently (each holds one pool connection). */
  maxInflight: number
  /** Called after every flush: metrics and logs hook in here. */
  onFlush?: (info: { rows: number, ms: number, error?: unknown }) => void
}

interface Pending<Row, Result> {
  row: Row
  resolve: (result: Result) => void
  reject: (error: unknown) => void
}

/**
 * Group commit: callers `push` a row and get a promise that settles only after the
 * statement holding the row has committed (or failed: then every row of that batch
 * fails and none of them is acknowledged, since one statement is one transaction).
 * Turning thousands of single-row INSERTs per second into a few multi-row ones is what
 * lets every checkout attempt be persisted at stampede rates.
 */
export class BatchWriter<Row, Result = void> {
  readonly #opts: BatchWriterOptions<Row, Result>
  #queue: Pending<Row, Result>[] = []
  #timer: NodeJS.Timeout | undefined
  #inflight = 0
  readonly #flushing = new Set<Promise<void>>()
  #closed = false

  constructor (opts: BatchWriterOptions<Row, Result>) {
    this.#opts = opts
  }

  /** Rows waiting for a batch (not counting batches being written). */
  get queued (): number {
    return this.#queue.length
  }

  push (row: Row): Promise<Result> {
    if (this.#closed) return Promise.reject(new ServiceUnavailable('shutting_down'))
    if (this.#queue.length >= this.#opts.maxQueue) {
      return Promise.reject(new ServiceUnavailable('write_queue_full'))
    }
    return new Promise<Result>((resolve, reject) => {
      this.#queue.push({ row, resolve, reject })
      if (this.#queue.length >= this.#opts.maxRows) this.#drain()
      else this.#timer ??= setTimeout(() => this.#drain(), this.#opts.windowMs)
    })
  }

  /** Writes everything queued and waits for every batch in flight. */
  async flush (): Promise<void> {
    while (this.#queue.length > 0 || this.#flushing.size > 0) {
      this.#drain()
      await Promise.race(this.#flushing)
    }
  }

  /** Refuses new rows, then writes what was accepted before. */
  async close (): Promise<void> {
    this.#closed = true
    await this.flush()
  }

  #drain (): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    while (this.#queue.length > 0 && this.#inflight < this.#opts.maxInflight) {
      const batch = this.#queue.splice(0, this.#opts.maxRows)
      const done = this.#write(batch).finally(() => {
        this.#flushing.delete(done)
        this.#inflight--
        // Rows that queued while every slot was busy go out now, not after another window.
        if (this.#queue.length >= this.#opts.maxRows) this.#drain()
        else if (this.#queue.length > 0) this.#timer ??= setTimeout(() => this.#drain(), this.#opts.windowMs)
      })
      this.#inflight++
      this.#flushing.add(done)
    }
  }

  async #write (batch: Pending<Row, Result>[]): Promise<void> {
    const started = performance.now()
    try {
      const results = await this.#opts.write(batch.map((p) => p.row))
      this.#opts.onFlush?.({ rows: batch.length, ms: performance.now() - started })
      batch.forEach((p, i) => p.resolve(results[i] as Result))
    } catch (error) {
      this.#opts.onFlush?.({ rows: batch.length, ms: performance.now() - started, error })
      const unavailable = new ServiceUnavailable('write_failed', { cause: error })
      for (const p of batch) p.reject(unavailable)
    }
  }
}
