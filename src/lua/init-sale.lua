-- initSale: publishes a sale's meta, which opens it for the decision scripts. Called last by the
-- one instance that holds the rebuild lock, after restoreCodes replayed Postgres's records.
-- KEYS: the six sale keys (see lib/release.lua); only KEYS[1] (meta) is written.
-- ARGV[1] item count, ARGV[2] per-user limit, ARGV[3] sale end (ms), ARGV[4] key expiry (ms, absolute),
-- ARGV[5] items already sold (from Postgres)
-- Returns 1 when it published, 0 when meta already existed.
-- Invariant: never overwrites live counters: a sale whose meta exists is left alone.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'items', ARGV[1], 'limit', ARGV[2], 'ends', ARGV[3], 'sold', ARGV[5])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1
