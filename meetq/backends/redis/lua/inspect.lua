-- inspect: everything stats() shows, in one call: counters, dead, delayed and unhandled
--   counts, and the live workers.
-- KEYS: the fixed layout of _lib.lua, then one ready/delayed/lease triplet per type the
--   caller knows of (it may know fewer types than exist; see `missing`), then the
--   workers ZSET (see heartbeat.lua) last.
-- ARGV[1] dead-letter max size, [2] dead-letter max age ms, [3] T, [4 .. 3+T] the type
--   names (triplet order).
-- Returns {counter values in COUNT_FIELDS order, dead letters kept, unhandled ready
--   messages, missing, delayed messages, live types, live worker entries}: `missing`
--   lists the known types whose keys were not passed (not counted); the caller passes
--   them next time. `live types` is a flat list of the types a heartbeat keeps alive;
--   `live worker entries` the workers ZSET members not yet expired.
-- Checked before its only write (the dead-letter caps): a corrupt fixed key fails the
-- call naming it; a type whose ready or delayed key is corrupt is not counted (exchange
-- names it).
local fault = fixed_fault({1, 8, 9, 10, 12, 13})
if fault then return redis.error_reply(fault) end
local ntypes = tonumber(ARGV[3])
local K_WORKERS = KEYS[15 + 3 * ntypes]
fault = key_fault(K_WORKERS, 'zset')
if fault then return redis.error_reply(fault) end
local base_of = {}
for t = 1, ntypes do base_of[ARGV[3 + t]] = 12 + 3 * t end
local now = now_ms()
local unhandled, delayed, missing = 0, 0, {}
for _, t in ipairs(redis.call('SMEMBERS', K_TYPES)) do
  local base = base_of[t]
  if not base then
    missing[#missing + 1] = t
  else
    if not wrong_type(KEYS[base + 1], 'zset') then
      delayed = delayed + redis.call('ZCARD', KEYS[base + 1])
    end
    local expiry = redis.call('ZSCORE', K_HANDLERS, t)
    if (not expiry or tonumber(expiry) <= now) and not wrong_type(KEYS[base], 'zset') then
      unhandled = unhandled + redis.call('ZCARD', KEYS[base])
    end
  end
end
trim_dead(now, tonumber(ARGV[1]), tonumber(ARGV[2]))
local out = redis.call('HMGET', K_COUNTS, unpack(COUNT_FIELDS))
for i = 1, #out do out[i] = tonumber(out[i]) or 0 end
out[#out + 1] = redis.call('ZCARD', K_DEAD)
out[#out + 1] = unhandled
out[#out + 1] = missing
out[#out + 1] = delayed
out[#out + 1] = redis.call('ZRANGEBYSCORE', K_HANDLERS, '(' .. now, '+inf')
out[#out + 1] = redis.call('ZRANGEBYSCORE', K_WORKERS, '(' .. now, '+inf')
return out
