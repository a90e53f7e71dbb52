import { randomBytes } from 'node:crypto'
import { mkdir, open, readdir, readFile, rename, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'

export interface AttemptSpoolOptions {
  /** This instance's directory (one per database and schema); created if missing. */
  dir: string
  /** Bytes of records not replayed yet past which `append` refuses. */
  maxBytes: number
  /** Called once when the spool becomes full and once when it has room again. */
  onFullChange?: (full: boolean) => void
  /** Records written to disk, refused by a full spool, or replayed (metrics hook in here). */
  onRecords?: (event: SpoolEvent, n: number) => void
}

export type SpoolEvent = 'spooled' | 'dropped' | 'replayed'

/** The spool is at its size bound: the record was not written. */
export class SpoolFull extends Error {
  constructor () {
    super('the attempt spool is full')
    this.name = 'SpoolFull'
  }
}

interface PendingLine { line: string, resolve: () => void, reject: (error: unknown) => void }

/** Instances of this process that are open now: their segments are nobody else's to replay. */
const openInstances = new Set<string>()

/** `<pid>-<instance>-<seq>.jsonl`: who wrote a segment, so that a dead writer's segments can be claimed. */
const SEGMENT = /^(\d+)-([0-9a-f]+)-(\d+)\.jsonl$/

const processAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * A local, append-only, fsynced log of records that Postgres cannot take now (src/sale/service.ts
 * spools the checkout attempts it answers 503). `append` resolves only once the record is on disk
 * (one write + fdatasync per group of concurrent appends, like the batch writer's group commit),
 * so a record survives a crash of the process. `replay` hands every record to a callback, segment
 * by segment, and deletes a segment only after the callback succeeded for all of it: a record may
 * be replayed more than once (after a crash mid-replay), never lost, so the callback must be
 * idempotent. Segments left by a dead process (its pid is gone, or is this process but not an
 * open instance) are claimed by renaming them, which one claimant wins, and replayed as one's own.
 * The size is bounded: past `maxBytes` not yet replayed, `append` refuses with SpoolFull.
 */
export class AttemptSpool<T> {
  readonly #opts: AttemptSpoolOptions
  readonly #instance = randomBytes(6).toString('hex')
  #seq = 0
  #active: { path: string, file: FileHandle } | null = null
  #bytes = 0
  #full = false
  #pending: PendingLine[] = []
  #flushing: Promise<void> | null = null
  /** Waiting for the active segment to be closed (see #rotate). */
  readonly #rotations: Array<() => void> = []
  #replaying: Promise<number> | null = null

  private constructor (opts: AttemptSpoolOptions) {
    this.#opts = opts
  }

  /** Opens the spool directory and counts what earlier, dead writers left there. */
  static async open<T> (opts: AttemptSpoolOptions): Promise<AttemptSpool<T>> {
    await mkdir(opts.dir, { recursive: true })
    const spool = new AttemptSpool<T>(opts)
    openInstances.add(spool.#instance)
    spool.#bytes = await spool.#unreplayedBytes()
    return spool
  }

  /** Bytes of records written and not replayed yet (this instance's and claimable orphans'). */
  get bytes (): number {
    return this.#bytes
  }

  /** Appends one record; resolves once it is on disk. Rejects with SpoolFull past the bound. */
  append (record: T): Promise<void> {
    const line = `${JSON.stringify(record)}\n`
    const size = Buffer.byteLength(line)
    if (this.#bytes + size > this.#opts.maxBytes) {
      this.#setFull(true)
      this.#opts.onRecords?.('dropped', 1)
      return Promise.reject(new SpoolFull())
    }
    this.#bytes += size
    return new Promise<void>((resolve, reject) => {
      this.#pending.push({ line, resolve, reject })
      this.#startFlush()
    })
  }

  /**
   * Hands every record written so far (and those of dead writers) to `apply`, in chunks, oldest
   * segment first; a segment is deleted once all its records were applied. Stops at the first
   * failure (the rest stays for the next call). Never runs twice at once. Returns records applied.
   */
  replay (apply: (records: T[]) => Promise<void>, chunk = 500): Promise<number> {
    this.#replaying ??= this.#replay(apply, chunk).finally(() => { this.#replaying = null })
    return this.#replaying
  }

  /** Writes what is pending and closes the active segment; the records stay for the next start. */
  async close (): Promise<void> {
    await this.#rotate()
    await this.#replaying?.catch(() => {})
    openInstances.delete(this.#instance)
    // An empty directory is not left behind (tests open many spools).
    if (this.#bytes === 0) await rmdir(this.#opts.dir).catch(() => {})
  }

  #startFlush (): void {
    this.#flushing ??= this.#flush().finally(() => {
      this.#flushing = null
      // Appends or a rotation that came in after the loop's last look.
      if (this.#pending.length > 0 || this.#rotations.length > 0) this.#startFlush()
    })
  }

  /** One writer at a time: each pass writes and fdatasyncs everything appended meanwhile. */
  async #flush (): Promise<void> {
    for (;;) {
      if (this.#rotations.length > 0) {
        const active = this.#active
        this.#active = null
        await active?.file.close().catch(() => {})
        for (const rotated of this.#rotations.splice(0)) rotated()
      }
      if (this.#pending.length === 0) return
      const batch = this.#pending
      this.#pending = []
      try {
        const active = this.#active ?? await this.#startSegment()
        await active.file.write(batch.map((p) => p.line).join(''))
        await active.file.datasync()
        this.#opts.onRecords?.('spooled', batch.length)
        for (const p of batch) p.resolve()
      } catch (error) {
        for (const p of batch) this.#bytes -= Buffer.byteLength(p.line)
        for (const p of batch) p.reject(error)
      }
    }
  }

  async #startSegment (): Promise<{ path: string, file: FileHandle }> {
    const path = join(this.#opts.dir, this.#segmentName())
    const file = await open(path, 'a')
    // The new directory entry must survive a crash too.
    const dir = await open(this.#opts.dir, 'r')
    try { await dir.sync() } finally { await dir.close() }
    this.#active = { path, file }
    return this.#active
  }

  #segmentName (): string {
    return `${process.pid}-${this.#instance}-${String(Date.now() * 1000 + (this.#seq++ % 1000)).padStart(16, '0')}.jsonl`
  }

  /** Closes the active segment between two writes (however busy appends are): it becomes replayable. */
  #rotate (): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#rotations.push(resolve)
      this.#startFlush()
    })
  }

  /** Segment names this instance may replay: its own closed ones and dead writers' ones. */
  async #replayable (): Promise<string[]> {
    const names = (await readdir(this.#opts.dir)).filter((name) => SEGMENT.test(name)).sort()
    return names.filter((name) => {
      const [, pid, instance] = SEGMENT.exec(name) as RegExpExecArray
      if (instance === this.#instance) return join(this.#opts.dir, name) !== this.#active?.path
      if (Number(pid) === process.pid) return !openInstances.has(instance as string)
      return !processAlive(Number(pid))
    })
  }

  async #unreplayedBytes (): Promise<number> {
    let bytes = this.#active === null ? 0 : (await this.#active.file.stat()).size
    for (const name of await this.#replayable()) bytes += await stat(join(this.#opts.dir, name)).then((s) => s.size, () => 0)
    return bytes
  }

  async #replay (apply: (records: T[]) => Promise<void>, chunk: number): Promise<number> {
    await this.#rotate()
    let applied = 0
    try {
      for (const name of await this.#replayable()) {
        let path = join(this.#opts.dir, name)
        if (!name.includes(`-${this.#instance}-`)) {
          // Claim a dead writer's segment; whoever renames it first replays it.
          const claimed = join(this.#opts.dir, this.#segmentName())
          if (!await rename(path, claimed).then(() => true, () => false)) continue
          path = claimed
        }
        const records = (await readFile(path, 'utf8')).split('\n').flatMap((line) => {
          // A line torn by a crash mid-write was never acknowledged to anyone: skip it.
          try { return line === '' ? [] : [JSON.parse(line) as T] } catch { return [] }
        })
        for (let i = 0; i < records.length; i += chunk) await apply(records.slice(i, i + chunk))
        await unlink(path)
        this.#opts.onRecords?.('replayed', records.length)
        applied += records.length
      }
    } finally {
      this.#bytes = await this.#unreplayedBytes() + this.#pending.reduce((n, p) => n + Buffer.byteLength(p.line), 0)
      if (this.#bytes < this.#opts.maxBytes) this.#setFull(false)
    }
    return applied
  }

  #setFull (full: boolean): void {
    if (this.#full === full) return
    this.#full = full
    this.#opts.onFullChange?.(full)
  }
}
