-- The decision deadline, prepended by the loader (src/sale/inventory.ts) to the decision scripts. A
-- decision is sent with the moment (ms, by this server's clock as the service estimates it) from
-- which the service no longer waits for its answer: by then it has answered its client 503.
-- ioredis does not withdraw a command it gave up on: a stalled Redis runs it when it resumes. A
-- decision read past its deadline must therefore change nothing, not even the abuse count.

-- ms since the epoch by this server's clock, or nil while `deadline` (ms) is not past. TIME is
-- allowed before writes: Redis 7 replicates a script by its effects.
local function past_deadline(deadline)
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  if now > tonumber(deadline) then
    return now
  end
  return nil
end
