-- initSale: publishes a sale's meta, which makes it live for the decision scripts: they accept
-- checkouts from its start to its end by the clock (the meta's `starts` and `ends`), so a sale
-- seeded minutes ahead opens at XX:00:00.000 without any callback. Called last by the one instance
-- that holds the rebuild lock, after restoreCodes replayed Postgres's records. The meta is stamped
-- with this server's replication history (`epoch`, see sale_lost in lib/sale-keys.lua).
-- KEYS: the six sale keys (named in lib/sale-keys.lua), then KEYS[7] the sale's rate counts
-- (lib/rate-limit.lua). KEYS[1] (meta) is written; every other key gets its placeholder.
-- ARGV[1] item count, ARGV[2] per-user limit, ARGV[3] sale start (ms), ARGV[4] sale end (ms),
-- ARGV[5] key expiry (ms, absolute), ARGV[6] items already sold (from Postgres)
-- Returns 1 when it published, 0 when the sale was already live on this server.
-- Invariant: never overwrites live counters: a sale live in this replication history is left
-- alone; meta stamped with another history (a promoted replica's copy) is replaced.
if not sale_lost() then
  return 0
end
redis.call('DEL', META)
redis.call('HSET', META, 'items', ARGV[1], 'limit', ARGV[2], 'starts', ARGV[3], 'ends', ARGV[4], 'sold', ARGV[6],
  'epoch', replication_epoch())
redis.call('PEXPIREAT', META, ARGV[5])
-- The placeholders (named in lib/sale-keys.lua): from now on none of the sale's keys is ever missing.
seed_placeholders(2, 7, ARGV[5])
return 1
