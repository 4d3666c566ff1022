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
--   `live worker entries` the workers ZSET members not yet expired; then the
--   `oldest age` in ms (-1: nothing ready): now - m:ready_at of the first OLDEST_LOOK
--   ready messages of each type and priority band, and now - the due time of each
--   type's earliest delayed message once due (not yet promoted by an exchange).
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
-- Ready scores are positions, not times: the oldest ready message of a type is found
-- among the first few of each priority band, by their m:ready_at (O(log n) each).
local OLDEST_LOOK = 16
local oldest = nil
local function older(ms)
  ms = tonumber(ms)
  if ms and (not oldest or ms < oldest) then oldest = ms end
end
for _, t in ipairs(redis.call('SMEMBERS', K_TYPES)) do
  local base = base_of[t]
  if not base then
    missing[#missing + 1] = t
  else
    if not wrong_type(KEYS[base + 1], 'zset') then
      delayed = delayed + redis.call('ZCARD', KEYS[base + 1])
      local due = redis.call('ZRANGE', KEYS[base + 1], 0, 0, 'WITHSCORES')[2]
      if due and tonumber(due) <= now then older(due) end
    end
    if not wrong_type(KEYS[base], 'zset') then
      local heads = {}
      for band = 0, 3 do
        local ids = redis.call('ZRANGEBYSCORE', KEYS[base], band * BAND,
          '(' .. string.format('%d', (band + 1) * BAND), 'LIMIT', 0, OLDEST_LOOK)
        for _, id in ipairs(ids) do heads[#heads + 1] = id end
      end
      if #heads > 0 and not wrong_type(K_READYAT, 'hash') then
        for _, ms in ipairs(redis.call('HMGET', K_READYAT, unpack(heads))) do older(ms) end
      end
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
out[#out + 1] = oldest and math.max(0, now - oldest) or -1
return out
