-- saleStats: one consistent read of a sale's counters.
-- KEYS: the six sale keys (see lib/release.lua).
-- ARGV: none
-- Returns { items, sold, taken } where taken = sold + held; all 0 when the sale is not seeded.
-- Read-only: no invariant to protect beyond reading meta and items in one atomic step.
local meta = redis.call('HMGET', KEYS[1], 'items', 'sold')
return { tonumber(meta[1] or '0'), tonumber(meta[2] or '0'), redis.call('HLEN', KEYS[2]) }
