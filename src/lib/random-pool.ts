import { randomBytes } from 'node:crypto'

const CHUNK_BYTES = 16
const CHUNKS_PER_REFILL = 1024
let pool = Buffer.alloc(0)
let offset = 0

/**
 * 16 fresh bytes from the CSPRNG, drawn 16 KiB at a time: one randomBytes call per checkout cost
 * more than the rest of a refusal. The returned view is never handed out again.
 */
export function random16 (): Buffer {
  if (offset === pool.length) {
    pool = randomBytes(CHUNK_BYTES * CHUNKS_PER_REFILL)
    offset = 0
  }
  offset += CHUNK_BYTES
  return pool.subarray(offset - CHUNK_BYTES, offset)
}
