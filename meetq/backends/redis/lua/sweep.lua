-- sweep: dead-letter ready messages of types no live worker handles, once they have
-- waited unhandled_timeout; forget types that hold no message at all.
-- KEYS: the fixed layout of _lib.lua, then one ready/delayed/lease triplet per type.
-- ARGV[1] timeout ms, [2] limit, [3] dead-letter max size, [4] dead-letter max age ms,
--   [5] T, then 2 values per type (triplet order): name, error text for its dead letters.
-- Returns how many messages were dead-lettered.
local SWEEP_SCAN = 10000 -- ready messages examined per type per call
local now = now_ms()
local timeout, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local dead_max, dead_age = tonumber(ARGV[3]), tonumber(ARGV[4])
local ntypes = tonumber(ARGV[5])
local swept = 0
local fault = fixed_fault({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13})
if fault then return redis.error_reply(fault) end
for t = 1, ntypes do
  if swept >= limit then break end
  local name, reason = ARGV[4 + 2 * t], ARGV[5 + 2 * t]
  local base = 12 + 3 * t
  local expiry = redis.call('ZSCORE', K_HANDLERS, name)
  -- Re-checked here: a worker may have come up since the candidates were read. A type
  -- with a corrupt key is left alone (the exchange reports it).
  if (not expiry or tonumber(expiry) <= now) and not type_fault(base) then
    promote(base, now, name, {dead_max, dead_age})
    local ready = KEYS[base]
    -- Only the front of the queue is examined, so a huge backlog cannot stall Redis;
    -- as the front is swept, later messages come into view on the next pass.
    local members = redis.call('ZRANGE', ready, 0, SWEEP_SCAN - 1, 'WITHSCORES')
    local ids = {}
    for i = 1, #members, 2 do ids[#ids + 1] = members[i] end
    local ready_at = hmget(K_READYAT, ids)
    local victims, entries = {}, {}
    -- The wait counts from when the message became ready or when the type's last
    -- handler went away, whichever is later: a restart of the only service handling a
    -- type must not cost it its backlog.
    local gone = tonumber(expiry) or 0
    for i = 1, #ids do
      if swept >= limit then break end
      if now - math.max(tonumber(ready_at[i]) or now, gone) >= timeout then
        local p = priority_of(tonumber(members[i * 2]))
        victims[#victims + 1] = ids[i]
        entries[#entries + 1] = {ids[i], name, p, reason, ''}
        count('waiting:' .. p, -1)
        swept = swept + 1
      end
    end
    bulk('ZREM', ready, victims)
    bury(entries, now, dead_max, dead_age)
    if redis.call('EXISTS', ready, KEYS[base + 1], KEYS[base + 2]) == 0 then
      redis.call('SREM', K_TYPES, name)
    end
  end
end
flush_counts()
return swept
