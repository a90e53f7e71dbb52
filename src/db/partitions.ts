import { setTimeout as sleep } from 'node:timers/promises'
import type pg from 'pg'

const DAY_MS = 86_400_000

/**
 * The partitioned tables, in the order a day leaves: purchases first, because they reference
 * checkout_attempts (migrations/1764600000000_partitioned-records.sql).
 */
const PARENTS = ['purchases', 'checkout_attempts'] as const
type Parent = typeof PARENTS[number]

/** One day's partition of checkout_attempts or purchases, named `<parent>_pYYYYMMDD`. */
export interface DayPartition {
  name: string
  parent: Parent
  /** The UTC day it holds, as YYYY-MM-DD. */
  day: string
  /** 'attached'; 'pending' when a DETACH ... CONCURRENTLY was interrupted; 'detached' when only the drop is left. */
  state: 'attached' | 'pending' | 'detached'
}

export interface PartitionPolicy {
  /** Days after today whose partitions exist ahead of time. */
  aheadDays: number
  /** A day is dropped once all of it is older than this many days. */
  retentionDays: number
}

/**
 * How long a maintenance statement may wait for a lock that writers of the hot tables would queue
 * behind (creating a partition, dropping one of purchases); tried LOCK_TRIES times, a pause apart.
 */
const HOT_LOCK_TIMEOUT = '200ms'
const LOCK_TRIES = 10
const LOCK_RETRY_PAUSE_MS = 500
const LOCK_NOT_AVAILABLE = '55P03'
/** DETACH ... CONCURRENTLY waits for older transactions without blocking anybody: it may take its time. */
const DETACH_LOCK_TIMEOUT = '60s'

const utcDay = (ms: number): string => new Date(ms).toISOString().slice(0, 10)

/** The UTC days whose every possible row is older than the retention: day end <= now - retention. */
export function isExpired (day: string, now: number, retentionDays: number): boolean {
  return Date.parse(`${day}T00:00:00.000Z`) + DAY_MS <= now - retentionDays * DAY_MS
}

/**
 * Partition maintenance, apart from the request path and from the sale roll: creates the day
 * partitions of checkout_attempts and purchases ahead of time, and detaches (CONCURRENTLY: writers
 * never wait for it) and drops the days past retention. Idempotent and safe on every instance at
 * once: creation serializes on a transaction-level advisory lock, a partition another instance is
 * detaching is finished (FINALIZE) or found gone. Every run uses a connection of its own straight to
 * Postgres (`connect`), never the pool, since DETACH ... CONCURRENTLY cannot run in a transaction and
 * session settings do not survive a transaction-mode pooler.
 */
export class PartitionMaintenance {
  constructor (
    private readonly connect: () => Promise<pg.Client>,
    private readonly policy: PartitionPolicy
  ) {}

  /** Creates the partitions of today .. today + aheadDays that are missing; returns how many tables it created. */
  async createAhead (now: number): Promise<number> {
    return this.#withClient((client) => withRetries(async () => {
      await client.query('BEGIN')
      try {
        await client.query(`SET LOCAL lock_timeout = '${HOT_LOCK_TIMEOUT}'`)
        const { rows: [row] } = await client.query<{ created: number }>(
          'SELECT flash_sale_add_day_partitions($1::date, $2::date) AS created',
          [utcDay(now), utcDay(now + this.policy.aheadDays * DAY_MS)])
        await client.query('COMMIT')
        return row?.created ?? 0
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {})
        throw error
      }
    }))
  }

  /** Every day partition in the schema, attached or left detached by an interrupted run. */
  async partitions (): Promise<DayPartition[]> {
    return this.#withClient((client) => listPartitions(client))
  }

  /**
   * Drops every partition whose day is past retention, purchases before the attempts they
   * reference; returns the dropped tables' names. Rows of live and recent sales are in younger
   * partitions and never touched. An attempts partition is detached CONCURRENTLY first, so its
   * writers never wait. A purchases partition is dropped attached: its foreign keys' triggers live
   * on sales, items and checkout_attempts, and dropping it detached would lock those (ACCESS
   * EXCLUSIVE) where dropping it attached locks only `purchases`, for milliseconds; the wait for that
   * lock is capped (lock_timeout) and retried, so a purchase waits at most that long, once a day.
   */
  async dropExpired (now: number): Promise<string[]> {
    return this.#withClient(async (client) => {
      // One retention pass at a time per schema, across instances and timers: two passes detaching
      // the same partition concurrently fail ("already pending detach"). The session lock ends
      // with this connection; a waiting pass then lists what the first one left.
      await client.query("SELECT pg_advisory_lock(hashtext(current_schema() || '.partition-retention'))")
      const expired = (await listPartitions(client)).filter((p) => isExpired(p.day, now, this.policy.retentionDays))
      const dropped: string[] = []
      for (const day of [...new Set(expired.map((p) => p.day))].sort()) {
        for (const parent of PARENTS) {
          const partition = expired.find((p) => p.day === day && p.parent === parent)
          if (partition === undefined) continue
          if (parent === 'checkout_attempts') await detach(client, partition)
          await withRetries(async () => {
            await client.query(`SET lock_timeout = '${HOT_LOCK_TIMEOUT}'`)
            await client.query(`DROP TABLE IF EXISTS ${partition.name}`)
          })
          dropped.push(partition.name)
        }
      }
      return dropped
    })
  }

  async #withClient<T> (work: (client: pg.Client) => Promise<T>): Promise<T> {
    const client = await this.connect()
    try {
      return await work(client)
    } finally {
      await client.end().catch(() => {})
    }
  }
}

/** Runs `work` again (a pause apart, a few times) while it fails for a lock it could not get in time. */
async function withRetries<T> (work: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await work()
    } catch (error) {
      if ((error as { code?: string }).code !== LOCK_NOT_AVAILABLE || attempt === LOCK_TRIES) throw error
      await sleep(LOCK_RETRY_PAUSE_MS)
    }
  }
}

async function listPartitions (client: pg.Client): Promise<DayPartition[]> {
  const { rows } = await client.query<{ name: string, parent: Parent, day: string, pending: boolean | null }>(
    `SELECT c.relname AS name, m[1] AS parent, to_char(to_date(m[2], 'YYYYMMDD'), 'YYYY-MM-DD') AS day, i.inhdetachpending AS pending
     FROM pg_class c
       CROSS JOIN LATERAL regexp_match(c.relname, '^(checkout_attempts|purchases)_p(\\d{8})$') AS m
       LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
     WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' AND m IS NOT NULL
     ORDER BY day, parent`)
  return rows.map((r) => ({
    name: r.name,
    parent: r.parent,
    day: r.day,
    state: r.pending === null ? 'detached' : r.pending ? 'pending' : 'attached'
  }))
}

/**
 * DETACH ... CONCURRENTLY: writers of the parent never wait for it (it takes SHARE UPDATE EXCLUSIVE
 * on the parent, then waits for older transactions before the partition's own lock). One that was
 * interrupted (lock timeout, crash) leaves the partition pending, and then no other partition of the
 * parent can be detached until it is finished with FINALIZE.
 */
async function detach (client: pg.Client, partition: DayPartition): Promise<void> {
  await client.query(`SET lock_timeout = '${DETACH_LOCK_TIMEOUT}'`)
  const { rows: pending } = await client.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = $1::regclass AND i.inhdetachpending`, [partition.parent])
  for (const { name } of pending) await client.query(`ALTER TABLE ${partition.parent} DETACH PARTITION ${name} FINALIZE`)
  if (partition.state === 'attached') {
    await client.query(`ALTER TABLE ${partition.parent} DETACH PARTITION ${partition.name} CONCURRENTLY`)
  }
}
