import { randomBytes } from 'node:crypto'
import { mkdir, open, readdir, readFile, rename, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'

export interface AttemptSpoolOptions<T = unknown> {
  /** This instance's directory (one per database and schema); created if missing. */
  dir: string
  /** Bytes of records not replayed yet past which `append` refuses. */
  maxBytes: number
  /** Called once when the spool becomes full and once when it has room again. */
  onFullChange?: (full: boolean) => void
  /**
   * Records written to disk, not written (`dropped`: refused by a full spool, or a failed or short
   * write; `cause` says why), replayed, or read back malformed and moved aside (`quarantined`).
   */
  onRecords?: (event: SpoolEvent, n: number, cause?: unknown) => void
  /** A segment's malformed lines were moved aside: the file they are in now, and their line numbers. */
  onQuarantine?: (info: { file: string, lines: number[], replayed: number }) => void
  /** Whether a record read back is one (a line holding `null`, or torn, is not): such lines are quarantined. */
  isRecord?: (value: unknown) => value is T
}

export type SpoolEvent = 'spooled' | 'dropped' | 'replayed' | 'quarantined'

/** The spool is at its size bound: the record was not written. */
export class SpoolFull extends Error {
  constructor () {
    super('the attempt spool is full')
    this.name = 'SpoolFull'
  }
}

/** The disk did not take the record (ENOSPC, EIO, a short write, a failed fdatasync): it was not written. */
export class SpoolWriteFailed extends Error {
  constructor (message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'SpoolWriteFailed'
  }
}

/** What the spool has done since it was opened (read by /health and the log). */
export interface SpoolStats {
  spooled: number
  dropped: number
  replayed: number
  quarantined: number
  /** False from a record the spool could not keep until a write succeeds or a replay frees room. */
  ok: boolean
  /** Why the last record was dropped, while `ok` is false. */
  lastError: string | null
}

interface PendingLine { line: string, resolve: () => void, reject: (error: unknown) => void }

/** Instances of this process that are open now: their segments are nobody else's to replay. */
const openInstances = new Set<string>()

/** `<pid>-<instance>-<seq>.jsonl`: who wrote a segment, so that a dead writer's segments can be claimed. */
const SEGMENT = /^(\d+)-([0-9a-f]+)-(\d+)\.jsonl$/

/** Where a segment with malformed lines is moved once its good records are replayed (never replayed again). */
export const QUARANTINE_PREFIX = 'quarantine-'

const isObject = (value: unknown): boolean => typeof value === 'object' && value !== null && !Array.isArray(value)

/**
 * The records of a segment's text, and the line numbers (1-based) of lines that are not one: a
 * line that is not JSON (torn by a crash mid-write: only ever the last one, see #write) or not a
 * record (`null`, ...). A last line without its newline whose JSON is whole is a record: it was
 * written whole, only its newline was cut.
 */
export function parseSegment<T> (text: string, isRecord: (value: unknown) => value is T): { records: T[], malformed: number[] } {
  const records: T[] = []
  const malformed: number[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string
    if (line === '') continue
    let value: unknown
    try { value = JSON.parse(line) } catch { malformed.push(i + 1); continue }
    if (isRecord(value)) records.push(value)
    else malformed.push(i + 1)
  }
  return { records, malformed }
}

const processAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * A local, append-only, fsynced log of records that Postgres cannot take now (src/sale/checkout.ts
 * spools the checkout attempts it answers 503). `append` resolves only once the record is on disk
 * (one write + fdatasync per group of concurrent appends, like the batch writer's group commit),
 * so a record survives a crash of the process. `replay` hands every record to a callback, segment
 * by segment, and deletes a segment only after the callback succeeded for all of it: a record may
 * be replayed more than once (after a crash mid-replay), never lost, so the callback must be
 * idempotent. Segments left by a dead process (its pid is gone, or is this process but not an
 * open instance) are claimed by renaming them, which one claimant wins, and replayed as one's own.
 * The size is bounded: past `maxBytes` not yet replayed, `append` refuses with SpoolFull.
 *
 * Nothing is lost silently: a record the disk did not take (a failed write, a short write — a
 * full disk takes part of a write —, a failed fdatasync) is refused with SpoolWriteFailed and
 * counted `dropped`, as is a record refused by the bound; what a short write left of a torn
 * record is cut off again (or, if even that fails, the segment is retired), so a record is never
 * written after a torn one. A line read back that is not a record (torn by a killed writer,
 * `null`, ...) costs only itself: the segment's good records are replayed, then the segment is
 * moved aside to `quarantine-<name>` and reported (onQuarantine), never replayed again.
 *
 * (Over 250 lines on purpose: the write path and the replay path share one piece of mutable
 * state, the open segment and the bytes not yet replayed, which a split would have to share.)
 */
export class AttemptSpool<T> {
  readonly #opts: AttemptSpoolOptions<T>
  readonly #isRecord: (value: unknown) => value is T
  readonly #instance = randomBytes(6).toString('hex')
  #seq = 0
  /** The segment appended to, and its bytes known to be whole records on disk. */
  #active: { path: string, file: FileHandle, size: number } | null = null
  readonly #stats: SpoolStats = { spooled: 0, dropped: 0, replayed: 0, quarantined: 0, ok: true, lastError: null }
  #bytes = 0
  #full = false
  #pending: PendingLine[] = []
  #flushing: Promise<void> | null = null
  /** Waiting for the active segment to be closed (see #rotate). */
  readonly #rotations: Array<() => void> = []
  #replaying: Promise<number> | null = null

  private constructor (opts: AttemptSpoolOptions<T>) {
    this.#opts = opts
    this.#isRecord = opts.isRecord ?? ((value: unknown): value is T => isObject(value))
  }

  /** Opens the spool directory and counts what earlier, dead writers left there. */
  static async open<T> (opts: AttemptSpoolOptions<T>): Promise<AttemptSpool<T>> {
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

  /** Counts since open, and whether the spool is keeping what it is given (see SpoolStats). */
  get stats (): Readonly<SpoolStats> {
    return this.#stats
  }

  /**
   * Appends one record; resolves once it is on disk. Rejects with SpoolFull past the bound, with
   * SpoolWriteFailed when the disk did not take it whole; either way it is counted `dropped`.
   */
  append (record: T): Promise<void> {
    const line = `${JSON.stringify(record)}\n`
    const size = Buffer.byteLength(line)
    if (this.#bytes + size > this.#opts.maxBytes) {
      this.#setFull(true)
      const error = new SpoolFull()
      this.#dropped(1, error)
      return Promise.reject(error)
    }
    this.#bytes += size
    return new Promise<void>((resolve, reject) => {
      this.#pending.push({ line, resolve, reject })
      this.#startFlush()
    })
  }

  /**
   * Hands every record written so far (and those of dead writers) to `apply`, in chunks, oldest
   * segment first; a segment is deleted once all its records were applied (moved aside to
   * `quarantine-<name>` instead if it held malformed lines: see parseSegment). Stops at the first
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
        await this.#retire()
        for (const rotated of this.#rotations.splice(0)) rotated()
      }
      if (this.#pending.length === 0) return
      const batch = this.#pending
      this.#pending = []
      const kept = await this.#write(batch.map((p) => p.line)).catch((error: unknown) => ({ n: 0, error: wrap(error) }))
      for (const p of batch.slice(kept.n)) this.#bytes -= Buffer.byteLength(p.line)
      if (kept.n > 0) {
        this.#stats.spooled += kept.n
        this.#stats.ok = true
        this.#stats.lastError = null
        this.#opts.onRecords?.('spooled', kept.n)
      }
      if (kept.n < batch.length) this.#dropped(batch.length - kept.n, kept.error)
      for (const p of batch.slice(0, kept.n)) p.resolve()
      for (const p of batch.slice(kept.n)) p.reject(kept.error)
    }
  }

  /**
   * Writes `lines` at the end of the active segment and fdatasyncs them; resolves with how many of
   * them (a prefix) are whole on disk, and why the rest are not. The file's own write may be short
   * (a full disk takes what fits): whole lines within it are kept, a torn one is cut off again, so
   * the segment always ends on a whole record and the next write starts a line of its own. If the
   * segment cannot be brought back to a whole record, it is retired (closed: replayable as it is,
   * its torn end quarantined) and the next write starts a new one.
   */
  async #write (lines: string[]): Promise<{ n: number, error: unknown }> {
    const active = this.#active ?? await this.#startSegment()
    const data = Buffer.from(lines.join(''))
    let written = 0
    let error: unknown = null
    try {
      // A short write is retried from where it stopped until the disk refuses (0 bytes, or an error).
      while (written < data.length) {
        const { bytesWritten } = await active.file.write(data, written, data.length - written)
        if (bytesWritten === 0) break
        written += bytesWritten
      }
    } catch (err) {
      error = err
    }
    let n = 0
    let whole = 0
    for (const line of lines) {
      const next = whole + Buffer.byteLength(line)
      if (next > written) break
      whole = next
      n++
    }
    if (n < lines.length) error ??= new SpoolWriteFailed(`short write: the disk took ${written} of ${data.length} bytes`)
    try {
      if (whole < written || error !== null) await active.file.truncate(active.size + whole)
      if (n > 0) await active.file.datasync()
    } catch (err) {
      // Not on disk for sure (a failed fdatasync may have lost the pages), or a torn record that
      // could not be cut: none of the batch counts as written, and the segment takes no more.
      await active.file.truncate(active.size).catch(() => {})
      await this.#retire()
      return { n: 0, error: wrap(err) }
    }
    active.size += whole
    return { n, error: error === null ? null : wrap(error) }
  }

  /** Closes the active segment: it becomes replayable, and the next write starts a new one. */
  async #retire (): Promise<void> {
    const active = this.#active
    this.#active = null
    await active?.file.close().catch(() => {})
  }

  #dropped (n: number, cause: unknown): void {
    this.#stats.dropped += n
    this.#stats.ok = false
    this.#stats.lastError = cause instanceof Error ? cause.message : String(cause)
    this.#opts.onRecords?.('dropped', n, cause)
  }

  async #startSegment (): Promise<{ path: string, file: FileHandle, size: number }> {
    const path = join(this.#opts.dir, this.#segmentName())
    const file = await open(path, 'a')
    try {
      // The new directory entry must survive a crash too.
      const dir = await open(this.#opts.dir, 'r')
      try { await dir.sync() } finally { await dir.close() }
    } catch (error) {
      await file.close().catch(() => {})
      throw error
    }
    this.#active = { path, file, size: 0 }
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
    let freed = false
    try {
      for (const name of await this.#replayable()) {
        let path = join(this.#opts.dir, name)
        if (!name.includes(`-${this.#instance}-`)) {
          // Claim a dead writer's segment; whoever renames it first replays it.
          const claimed = join(this.#opts.dir, this.#segmentName())
          if (!await rename(path, claimed).then(() => true, () => false)) continue
          path = claimed
        }
        const { records, malformed } = parseSegment(await readFile(path, 'utf8'), this.#isRecord)
        for (let i = 0; i < records.length; i += chunk) await apply(records.slice(i, i + chunk))
        if (malformed.length === 0) {
          await unlink(path)
          freed = true
        } else {
          // Moved aside whole (a rename needs no room on a full disk), for an operator to read.
          const file = join(this.#opts.dir, `${QUARANTINE_PREFIX}${name}`)
          await rename(path, file)
          this.#stats.quarantined += malformed.length
          this.#opts.onRecords?.('quarantined', malformed.length)
          this.#opts.onQuarantine?.({ file, lines: malformed, replayed: records.length })
        }
        this.#stats.replayed += records.length
        this.#opts.onRecords?.('replayed', records.length)
        applied += records.length
      }
    } finally {
      this.#bytes = await this.#unreplayedBytes() + this.#pending.reduce((n, p) => n + Buffer.byteLength(p.line), 0)
      if (this.#bytes < this.#opts.maxBytes) this.#setFull(false)
      // Room was freed on the spool's disk: what failed before may well be written now.
      if (freed && !this.#full) {
        this.#stats.ok = true
        this.#stats.lastError = null
      }
    }
    return applied
  }

  #setFull (full: boolean): void {
    if (this.#full === full) return
    this.#full = full
    this.#opts.onFullChange?.(full)
  }
}

const wrap = (error: unknown): Error => error instanceof SpoolWriteFailed ? error : new SpoolWriteFailed(`the spool's disk refused the write: ${error instanceof Error ? error.message : String(error)}`, { cause: error })
