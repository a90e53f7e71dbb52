-- voidPurchase: a redeemed code whose purchase Postgres voided (see the settlement fence in
-- src/sale/record-writers.ts): the purchase will never be recorded, so its item goes straight back on sale.
-- KEYS: the six sale keys (named in lib/sale-keys.lua).
-- ARGV[1] checkout code
-- Returns 1 when the code's item was given back, 0 when the code was not in the purchased state.
-- A no-op (returns 0) while the sale is lost (see sale_lost), e.g. while it is being rebuilt (the
-- rebuild reads Postgres, which already holds the code as voided).
-- Invariant: Redis counts as sold exactly what Postgres holds or may still commit; a voided code
-- can never buy (its state becomes X, as an expired code's).
local item, expires, user = code_in_state(ARGV[1], 'P')
if not item then
  return 0
end
redis.call('HINCRBY', META, 'sold', -1)
redis.call('HINCRBY', BOUGHT, user, -1)
release_code(ARGV[1], item, expires, user)
return 1
