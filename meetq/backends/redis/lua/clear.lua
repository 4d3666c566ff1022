-- clear: remove every waiting (ready or delayed) message of the given types; leased
-- messages stay with their workers.
-- KEYS: the fixed layout of _lib.lua, then one ready/delayed/lease triplet per type.
-- ARGV: none (every triplet passed is cleared).
-- Returns how many messages were removed.
-- Checked first, so a corrupt key fails the whole call (naming it) with nothing removed.
local fault = fixed_fault({1, 2, 3, 4, 5, 6, 7, 10})
if fault then return redis.error_reply(fault) end
for base = 15, #KEYS, 3 do
  fault = type_fault(base)
  if fault then return redis.error_reply('meetq: ' .. fault) end
end
local removed = 0
for base = 15, #KEYS, 3 do
  local ids = redis.call('ZRANGE', KEYS[base], 0, -1)
  for _, id in ipairs(redis.call('ZRANGE', KEYS[base + 1], 0, -1)) do ids[#ids + 1] = id end
  if #ids > 0 then
    local scores = hmget(K_SCORE, ids)
    for i = 1, #ids do
      -- A corrupt score hides the priority it was counted under: that counter is not
      -- corrected, rather than failing halfway.
      local s = score_of(scores[i])
      if s then count('waiting:' .. priority_of(s), -1) end
    end
    forget(ids, false)
    redis.call('DEL', KEYS[base], KEYS[base + 1])
    removed = removed + #ids
  end
end
flush_counts()
return removed
