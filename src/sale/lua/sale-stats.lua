-- saleStats: one consistent read of a sale's counters.
-- KEYS: the six sale keys (named in lib/sale-keys.lua).
-- ARGV: none
-- Returns { items, sold, taken } where taken = sold + held; all 0 when the sale is not seeded
-- or this server cannot be trusted with it (see sale_lost).
-- Read-only: no invariant to protect beyond reading meta and items in one atomic step.
if sale_lost() then
  return { 0, 0, 0 }
end
local meta = redis.call('HMGET', META, 'items', 'sold')
-- (items' placeholder field, see lib/sale-keys.lua, holds nothing)
return { tonumber(meta[1]), tonumber(meta[2]), redis.call('HLEN', ITEMS) - redis.call('HEXISTS', ITEMS, '') }
