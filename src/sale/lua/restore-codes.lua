-- restoreCodes: replays a chunk of Postgres's accepted checkouts into a sale whose Redis state
-- was lost (flush, restart, failover, a slot migration: see sale_lost in lib/sale-keys.lua). Run
-- only by the holder of the sale's rebuild lock while the sale is not live (its meta missing or
-- of another replication history, so no decision script runs), purchases first; initSale then
-- publishes the meta. The first chunk clears what the server had of the sale (keys 2-6; the
-- stale meta stays until initSale replaces it) inside the script, placeholders included, so
-- that no key of the sale is ever missing (a Cluster slot in migration refuses a script whose
-- keys are not all present: see lib/sale-keys.lua).
-- KEYS: the six sale keys (named in lib/sale-keys.lua).
-- ARGV[1] now (ms), ARGV[2] key expiry (ms, absolute), ARGV[3] '1' for the first chunk (clear
-- first), then groups of five: code, purchased ('1' | '0'), item id, expiresAtMs, user id
-- Returns the number of codes that hold an item (sold or live reservation) after the chunk.
-- Invariants: an item is held by at most one code (a purchase wins; a second live code for the
-- same item is stored expired); user counts equal that user's purchases + live reservations.
local now = tonumber(ARGV[1])
if ARGV[3] == '1' then
  for i = 2, 6 do
    redis.call('DEL', KEYS[i])
  end
  seed_placeholders(2, 6, ARGV[2])
end
local holding = 0
for i = 4, #ARGV, 5 do
  local code, purchased, item, expires, user = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local free = redis.call('HEXISTS', ITEMS, item) == 0
  if purchased == '1' and free then
    redis.call('HSET', ITEMS, item, 'sold')
    redis.call('HSET', CODES, code, 'P|' .. item .. '|' .. expires .. '|' .. user)
    redis.call('HINCRBY', USERS, user, 1)
    redis.call('HINCRBY', BOUGHT, user, 1)
    holding = holding + 1
  elseif purchased == '0' and free and tonumber(expires) > now then
    redis.call('HSET', ITEMS, item, code)
    redis.call('HSET', CODES, code, 'R|' .. item .. '|' .. expires .. '|' .. user)
    redis.call('HINCRBY', USERS, user, 1)
    redis.call('ZADD', EXPIRY, expires, code)
    holding = holding + 1
  else
    redis.call('HSET', CODES, code, 'X|' .. item .. '|' .. expires .. '|' .. user)
  end
end
for i = 2, 6 do
  redis.call('PEXPIREAT', KEYS[i], ARGV[2])
end
return holding
