-- reserveItem: the checkout decision.
-- KEYS: the six sale keys (named in lib/sale-keys.lua).
-- ARGV[1] user id, ARGV[2] item id, ARGV[3] new checkout code, ARGV[4] now (ms),
-- ARGV[5] reservation expiry (ms), ARGV[6] expired reservations released per batch when the user is
-- at the limit, ARGV[7] key expiry (ms, absolute; for the rate hash of a lost sale)
-- Abuse limit (lib/rate-limit.lua): KEYS[7] (RATE) the sale's per-user rate counts,
-- ARGV[8] checkouts a user may try per window (0 = no limit), ARGV[9] the window's end (ms, absolute)
-- ARGV[10] the deadline (ms, this server's clock: lib/deadline.lua)
-- Returns a status string, or a table for a hold of the user's own: 'ok' | 'no_sale' (not seeded, or Redis lost it: see sale_lost)
--   | 'not_open' (before the sale's start) | 'no_active_sale' (sale ended) | 'unknown_item' | 'sold_out' | 'item_sold' | 'item_reserved'
--   | 'user_limit_reached'
--   | { 'already_reserved_by_you', code, expiry (ms) }: the live hold is this user's own, and its code
--     goes back to them (their first answer may have been lost)
--   | 'rate_limited' (counted first: a limited try decides nothing)
--   | { 'too_late', server time (ms) }: read past its deadline (the service answered 503 already), so
--     it did nothing at all
-- Invariants: an item is held by at most one code or sold once; a user's holds + purchases
-- never exceed the limit; nothing is reserved outside the sale's [starts, ends) window, which
-- the clock decides here (a sale is seeded before it opens). An expired hold neither keeps its
-- item nor counts against its user, swept or not: the periodic sweep (release-expired.lua) is
-- not waited for, and a checkout releases only the expired holds in its way (no sweep per call).
-- A decision the service gave up on changes nothing.
local RATE = KEYS[7]
local late = past_deadline(ARGV[10])
if late then
  return { 'too_late', late }
end

if over_rate_limit(RATE, ARGV[1], tonumber(ARGV[8]), ARGV[9]) then
  return 'rate_limited'
end

local meta = redis.call('HMGET', META, 'items', 'limit', 'ends', 'sold', 'starts', 'epoch')
if lost_in(meta[6]) then
  -- The count above may have created the rate hash (this server has none of the sale): it must
  -- not outlive the sale.
  redis.call('PEXPIREAT', RATE, ARGV[7])
  return 'no_sale'
end
local now = tonumber(ARGV[4])
if now < tonumber(meta[5]) then
  return 'not_open'
elseif now >= tonumber(meta[3]) then
  return 'no_active_sale'
end
local item_count = tonumber(meta[1])
if tonumber(ARGV[2]) > item_count then
  return 'unknown_item'
end
if tonumber(meta[4]) >= item_count then
  return 'sold_out'
end

local holder = redis.call('HGET', ITEMS, ARGV[2])
if holder == 'sold' then
  return 'item_sold'
elseif holder then
  local state, item, expires, user = parse_code(redis.call('HGET', CODES, holder) or '')
  if state ~= 'R' or tonumber(expires) > now then
    -- The holder asking again (a second tab, a retry after a lost answer) is told the hold is
    -- theirs, with its code: without it, a lost answer would keep them from an item they hold.
    if state == 'R' and user == ARGV[1] then
      return { 'already_reserved_by_you', holder, expires }
    end
    return 'item_reserved'
  end
  -- An expired hold the periodic sweep has not reached yet: its item is on sale again.
  release_code(holder, item, expires, user)
end
-- Nor does a user's expired hold count against the limit: at the limit, expired holds are
-- released (oldest first, in batches) until the user is below it or none is left.
local limit = tonumber(meta[2])
local held = tonumber(redis.call('HGET', USERS, ARGV[1]) or '0')
while held >= limit and release_expired(now, tonumber(ARGV[6])) > 0 do
  held = tonumber(redis.call('HGET', USERS, ARGV[1]) or '0')
end
if held >= limit then
  return 'user_limit_reached'
end

redis.call('HSET', ITEMS, ARGV[2], ARGV[3])
redis.call('HSET', CODES, ARGV[3], 'R|' .. ARGV[2] .. '|' .. ARGV[5] .. '|' .. ARGV[1])
redis.call('HINCRBY', USERS, ARGV[1], 1)
redis.call('ZADD', EXPIRY, ARGV[5], ARGV[3])
return 'ok'
