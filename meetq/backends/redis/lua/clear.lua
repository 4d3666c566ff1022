-- clear: remove every waiting (ready or delayed) message of the given types; leased
-- messages stay with their workers.
-- KEYS: the fixed layout of _lib.lua, then one ready/delayed/lease triplet per type.
-- ARGV[1] limit: at most this many are removed (0: every waiting message of the
--   triplets passed), ready ones first, oldest first.
-- Returns how many messages were removed.
-- Checked first, so a corrupt key fails the whole call (naming it) with nothing removed.
local fault = fixed_fault({1, 2, 3, 4, 5, 6, 7, 10})
if fault then return redis.error_reply(fault) end
for base = 15, #KEYS, 3 do
  fault = type_fault(base)
  if fault then return redis.error_reply('meetq: ' .. fault) end
end
local limit = tonumber(ARGV[1]) or 0
local removed = 0
for base = 15, #KEYS, 3 do
  local left = limit > 0 and limit - removed or 0
  if limit > 0 and left <= 0 then break end
  local ids = redis.call('ZRANGE', KEYS[base], 0, left - 1)
  if limit == 0 or #ids < left then
    local more = limit > 0 and left - #ids - 1 or -1
    for _, id in ipairs(redis.call('ZRANGE', KEYS[base + 1], 0, more)) do ids[#ids + 1] = id end
  end
  if #ids > 0 then
    local scores = hmget(K_SCORE, ids)
    for i = 1, #ids do
      -- A corrupt score hides the priority it was counted under: that counter is not
      -- corrected, rather than failing halfway.
      local s = score_of(scores[i])
      if s then count('waiting:' .. priority_of(s), -1) end
    end
    forget(ids, false)
    bulk('ZREM', KEYS[base], ids)
    bulk('ZREM', KEYS[base + 1], ids)
    removed = removed + #ids
  end
end
flush_counts()
return removed
