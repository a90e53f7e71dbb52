-- initSale: seeds the hot state of one sale, once.
-- KEYS: the six sale keys (see lib/release.lua); only KEYS[1] (meta) is written.
-- ARGV[1] item count, ARGV[2] per-user limit, ARGV[3] sale end (ms), ARGV[4] key expiry (ms, absolute)
-- Returns 1 when it seeded, 0 when the sale was already seeded.
-- Invariant: idempotent under any number of instances and restarts, so a sale's counters
-- (sold, holds) are never reset by a second roll of the same hour.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'items', ARGV[1], 'limit', ARGV[2], 'ends', ARGV[3], 'sold', 0)
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1
