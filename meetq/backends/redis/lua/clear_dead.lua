-- clear_dead: empty the dead-letter queue, bodies included.
-- KEYS: the fixed layout of _lib.lua (uses dead, dinfo, m:body).
-- ARGV: none.
-- Returns how many dead letters were removed.
local fault = fixed_fault({1, 8, 9})
if fault then return redis.error_reply(fault) end
local ids = redis.call('ZRANGE', K_DEAD, 0, -1)
bulk('HDEL', K_BODY, ids)
redis.call('DEL', K_DEAD, K_DINFO)
return #ids
