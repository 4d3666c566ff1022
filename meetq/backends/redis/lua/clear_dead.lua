-- clear_dead: empty the dead-letter queue, bodies included.
-- KEYS: the fixed layout of _lib.lua (uses dead, dinfo, m:body).
-- ARGV: none.
-- Returns how many dead letters were removed.
local ids = redis.call('ZRANGE', K_DEAD, 0, -1)
bulk('HDEL', K_BODY, ids)
redis.call('DEL', K_DEAD, K_DINFO)
return #ids
