-- releaseExpired: the periodic sweep that returns expired reservations to stock.
-- KEYS: the six sale keys (named in lib/sale-keys.lua).
-- ARGV[1] now (ms), ARGV[2] max reservations to release in this call
-- Returns the number released.
-- A no-op (returns 0) while the sale is lost (see sale_lost), e.g. while it is being rebuilt.
-- Invariant: an unused reservation gives its item back to the sale and its slot back to the
-- user, so a sale with enough demand sells out exactly.
if sale_lost() then
  return 0
end
return release_expired(tonumber(ARGV[1]), tonumber(ARGV[2]))
