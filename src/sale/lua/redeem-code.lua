-- redeemCode: the purchase decision.
-- KEYS: the six sale keys (named in lib/sale-keys.lua).
-- ARGV[1] checkout code, ARGV[2] now (ms), ARGV[3] key expiry (ms, absolute),
-- ARGV[4] the deadline (ms, this server's clock: lib/deadline.lua), ARGV[5] this redemption's token
-- (kept in the code's record: undoRedeem names it, the purchase carries it)
-- Returns { status, item, user, bought }: status 'ok' | 'no_sale' (Redis lost the sale: see sale_lost)
--   | 'unknown_code' | 'code_used' | 'code_expired' | 'too_late' (read past its deadline: the service
--   answered 503 already, so it did nothing; the second field is the server's time in ms);
-- item/user/bought only with 'ok' (bought = the user's purchases in this sale, this one included).
-- Invariants: a code is redeemed at most once (the state flips R -> P atomically, so two
-- redemptions in the same millisecond see different states); an expired code never buys; a
-- decision the service gave up on changes nothing. The token in the code's record lets an undo
-- (a redemption whose answer was lost, or whose purchase was fenced off) undo that one alone.
local late = past_deadline(ARGV[4])
if late then
  return { 'too_late', late }
end
if sale_lost() then
  return { 'no_sale' }
end
local record = redis.call('HGET', CODES, ARGV[1])
if not record then
  return { 'unknown_code' }
end
local state, item, expires, user = parse_code(record)
if state == 'P' then
  return { 'code_used' }
elseif state == 'X' then
  return { 'code_expired' }
end
-- The item must still be held by this very code (defends against any stale record after a rebuild).
if tonumber(ARGV[2]) >= tonumber(expires) or redis.call('HGET', ITEMS, item) ~= ARGV[1] then
  release_code(ARGV[1], item, expires, user)
  return { 'code_expired' }
end

redis.call('HSET', ITEMS, item, 'sold')
redis.call('HSET', CODES, ARGV[1], 'P|' .. item .. '|' .. expires .. '|' .. user .. '|' .. ARGV[5])
redis.call('ZREM', EXPIRY, ARGV[1])
redis.call('HINCRBY', META, 'sold', 1)
local bought = redis.call('HINCRBY', BOUGHT, user, 1)
return { 'ok', item, user, bought }
