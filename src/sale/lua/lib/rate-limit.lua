-- Fixed-window abuse limit, prepended by the loader (src/sale/inventory.ts) to the scripts that count
-- requests. One hash per sale (who -> '<window end>:<requests in that window>'), published with the
-- sale (init-sale.lua) and expiring with its other keys: no key is born while the sale is live, so
-- in a Redis Cluster slot migration a script's keys are all on one side or the other (a key that
-- exists on neither would answer TRYAGAIN for as long as the slot is migrating). Counting costs one
-- HGET and one HSET; a caller's field is rewritten when its window has ended.

-- Counts one request of `who` in the window ending at `window_ends` (ms, absolute, as a decimal
-- string) in the hash `key`, and returns true when that exceeds `max`; a `max` of 0 is no limit
-- and counts nothing. The hash of a live sale exists with its expiry (init-sale.lua); a count
-- that finds the sale lost must give the hash one (it may have just created it).
local function over_rate_limit(key, who, max, window_ends)
  if max == 0 then
    return false
  end
  local count = 1
  local seen = redis.call('HGET', key, who)
  if seen then
    local ends, n = string.match(seen, '^(%d+):(%d+)$')
    if ends == window_ends then
      count = tonumber(n) + 1
    end
  end
  redis.call('HSET', key, who, window_ends .. ':' .. count)
  return count > max
end
