-- Returning reservations to stock, prepended (after lib/sale-keys.lua) to the scripts that do.

-- Gives a reservation's item back to the sale and its slot back to the user.
local function release_code(code, item, expires, user)
  redis.call('HDEL', ITEMS, item)
  redis.call('HINCRBY', USERS, user, -1)
  redis.call('HSET', CODES, code, 'X|' .. item .. '|' .. expires .. '|' .. user)
  redis.call('ZREM', EXPIRY, code)
end

-- Releases up to `max` reservations whose expiry is at or before `now`; returns how many.
local function release_expired(now, max)
  local expired = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', now, 'LIMIT', 0, max)
  for _, code in ipairs(expired) do
    local _, item, expires, user = parse_code(redis.call('HGET', CODES, code))
    release_code(code, item, expires, user)
  end
  return #expired
end
