-- dead_list: apply the dead-letter caps, then list the oldest dead letters.
-- KEYS: the fixed layout of _lib.lua (uses dead, dinfo, m:body).
-- ARGV[1] max size, [2] max age ms, [3] limit, [4] '1' to include bodies.
-- Returns {count, then per entry: id, info json[, body]}.
local fault = fixed_fault({1, 8, 9})
if fault then return redis.error_reply(fault) end
local now = now_ms()
trim_dead(now, tonumber(ARGV[1]), tonumber(ARGV[2]))
local out = {redis.call('ZCARD', K_DEAD)}
local limit = tonumber(ARGV[3])
if limit > 0 then
  local ids = redis.call('ZRANGE', K_DEAD, 0, limit - 1)
  local infos = hmget(K_DINFO, ids)
  local bodies = {}
  if ARGV[4] == '1' then bodies = hmget(K_BODY, ids) end
  for i = 1, #ids do
    out[#out + 1] = ids[i]
    out[#out + 1] = infos[i]
    if ARGV[4] == '1' then out[#out + 1] = bodies[i] end
  end
end
return out
