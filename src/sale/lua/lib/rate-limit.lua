-- Fixed-window abuse limit, prepended by the loader (src/sale/inventory.ts) to the scripts that count
-- requests. A window is one hash (who -> requests in this window) that expires when the window
-- ends, so counting costs one HINCRBY (plus a PEXPIREAT for the first request of each caller).

-- Counts one request of `who` in the window hash `key` ending at `window_ends` (ms, absolute)
-- and returns true when that exceeds `max`; a `max` of 0 is no limit and counts nothing.
local function over_rate_limit(key, who, max, window_ends)
  if max == 0 then
    return false
  end
  local count = redis.call('HINCRBY', key, who, 1)
  if count == 1 then
    redis.call('PEXPIREAT', key, window_ends)
  end
  return count > max
end
