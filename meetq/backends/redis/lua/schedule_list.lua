-- schedule_list: every schedule of the queue, as stored.
-- KEYS[1] sched (see schedule_put.lua). No ARGV.
-- Returns {name1, record1, name2, record2, ...} (HGETALL); a sched key of another type
-- is an error naming it.
local fault = key_fault(KEYS[1], 'hash')
if fault then return redis.error_reply(fault) end
return redis.call('HGETALL', KEYS[1])
