-- cancelReservation: compensation when Postgres did not commit the checkout attempt that
-- reserveItem accepted (the client got an error, so nobody holds the code).
-- KEYS: the six sale keys (named in lib/sale-keys.lua).
-- ARGV[1] checkout code
-- Returns 1 when the reservation was released, 0 when the code was not reserved.
-- A no-op (returns 0) while the sale is lost (see sale_lost), e.g. while it is being rebuilt.
-- Invariant: no item stays held by a code that was never acknowledged and never recorded.
local item, expires, user = code_in_state(ARGV[1], 'R')
if not item then
  return 0
end
release_code(ARGV[1], item, expires, user)
return 1
