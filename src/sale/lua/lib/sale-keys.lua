-- The sale's keys and state, prepended by the loader (src/sale/inventory.ts) to every sale script.
-- Every sale script is called with the same six keys, named here once:
--   KEYS[1] meta    hash   items, limit, ends (ms), sold
--   KEYS[2] items   hash   item id -> holding code, or 'sold'; absent = available
--   KEYS[3] codes   hash   code -> 'STATE|item|expiresAtMs|user', STATE R(eserved), P(urchased), X(expired);
--                          a code redeemed by redeemCode has '|token' appended: its redemption's token
--   KEYS[4] users   hash   user -> reservations held + items bought (the per-user limit counts both)
--   KEYS[5] bought  hash   user -> items bought
--   KEYS[6] expiry  zset   reserved code -> expiresAtMs
-- All six share the hash tag {sale:<id>:<token>} so a Redis Cluster keeps one sale on one slot.
-- (src/sale/sale.ts names the same keys `sale.key.meta` ... `sale.key.expiry`.)
-- meta also holds `epoch`: the replication history (master_replid) the state was built in.
-- Each of the others (and the rate counts, lib/rate-limit.lua) holds a placeholder from the
-- sale's publication (init-sale.lua): the field '' (hashes) or the member '' at +inf (expiry),
-- never an item, code or user (a user id has 1-64 characters). So no key of a live sale is ever
-- missing, even when its last hold goes: in a Redis Cluster slot migration every key a script
-- names is on one side or the other, and TRYAGAIN lasts only while the keys move.
local META, ITEMS, CODES, USERS, BOUGHT, EXPIRY = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]

-- The replication history of this server's dataset. Redis gives a server a new one when it is
-- promoted from replica to primary (Sentinel or Cluster failover) and when it restarts: exactly
-- the two ways a Redis comes back without some writes it had acknowledged (replication and
-- persistence are asynchronous). A plain reconnect to the same primary keeps it.
local function replication_epoch()
  return string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)')
end

-- True while this server cannot be trusted with the sale, given its meta's `epoch` (nil when the
-- meta is missing: flush, restart, a rebuild from Postgres under way), or when that was written in
-- another replication history (a promoted replica may lack the old primary's last writes). Mutating scripts then do nothing, the
-- service rebuilds the sale from Postgres (the system of record), and the rebuild sees no writer.
-- A Cluster slot migration moves the keys into another server's history too, so the sale is
-- rebuilt once on its new node: the known cost of a planned move. Nothing a script can see tells
-- such a move from a node that restarted, or was promoted, with some acknowledged writes missing
-- (both show a foreign epoch; a node id or the importing state could only narrow it down, with
-- double faults left unsafe), and the rebuild is what makes every such case safe.
local function lost_in(epoch)
  return not epoch or epoch ~= replication_epoch()
end

-- lost_in for a script that reads nothing else of the meta (a caller that does reads `epoch` with it).
local function sale_lost()
  return lost_in(redis.call('HGET', META, 'epoch'))
end

-- Puts the placeholders (above) into KEYS[first..last] where missing, all expiring at `expiry`
-- (ms, absolute). KEYS[6] is the expiry zset; every other key is a hash.
local function seed_placeholders(first, last, expiry)
  for i = first, last do
    if i == 6 then
      redis.call('ZADD', KEYS[i], 'NX', '+inf', '')
    else
      redis.call('HSETNX', KEYS[i], '', '')
    end
    redis.call('PEXPIREAT', KEYS[i], expiry)
  end
end

-- state, item, expiry, user and (a redeemed code's) redemption token; user ids never hold a '|'.
local function parse_code(record)
  return string.match(record, '^(%u)|(%d+)|(%d+)|([^|]*)|?(.*)$')
end

-- The item, expiry, user and redemption token ('' if none) of `code` when its record is in state
-- `wanted`; nil when the code is unknown, in another state, or the sale is lost (compensations
-- must not write into a rebuild).
local function code_in_state(code, wanted)
  if sale_lost() then
    return nil
  end
  local record = redis.call('HGET', CODES, code)
  if not record then
    return nil
  end
  local state, item, expires, user, token = parse_code(record)
  if state ~= wanted then
    return nil
  end
  return item, expires, user, token
end
