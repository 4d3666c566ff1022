-- clear_dead: remove dead letters, oldest first, bodies included.
-- KEYS: the fixed layout of _lib.lua (uses dead, dinfo, m:body).
-- ARGV[1] limit: at most this many (0: all).
-- Returns how many dead letters were removed.
local fault = fixed_fault({1, 8, 9})
if fault then return redis.error_reply(fault) end
local limit = tonumber(ARGV[1]) or 0
local ids = redis.call('ZRANGE', K_DEAD, 0, limit - 1)
bulk('HDEL', K_BODY, ids)
if limit > 0 then
  bulk('ZREM', K_DEAD, ids)
  bulk('HDEL', K_DINFO, ids)
else
  redis.call('DEL', K_DEAD, K_DINFO)
end
return #ids
