-- undoRedeem: compensation when Postgres did not commit a purchase that redeemCode allowed, and
-- never will (it was never sent, rolled back, or was fenced off: see releaseRedemptions in
-- src/sale/repository.ts).
-- KEYS: the six sale keys (named in lib/sale-keys.lua).
-- ARGV[1] checkout code, ARGV[2] the redemption's token
-- Returns 1 when the purchase was undone (the code holds its item again, until its own expiry),
-- 0 when the code was not in the purchased state by that redemption (undone already, or redeemed
-- again since: that newer purchase may commit, so it is left alone).
-- A no-op (returns 0) while the sale is lost (see sale_lost), e.g. while it is being rebuilt.
-- Invariant: Redis never counts a sale that Postgres, the system of record, does not hold,
-- and the buyer may retry the same code.
local item, expires, user, token = code_in_state(ARGV[1], 'P')
if not item or token ~= ARGV[2] then
  return 0
end
redis.call('HSET', ITEMS, item, ARGV[1])
redis.call('HSET', CODES, ARGV[1], 'R|' .. item .. '|' .. expires .. '|' .. user)
redis.call('ZADD', EXPIRY, expires, ARGV[1])
redis.call('HINCRBY', META, 'sold', -1)
redis.call('HINCRBY', BOUGHT, user, -1)
return 1
