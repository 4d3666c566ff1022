-- schedule_remove: delete one named schedule of the queue.
-- KEYS[1] sched (see schedule_put.lua), KEYS[2] notify. ARGV[1] name.
-- Returns 1 when it was there (and sends a schedule wake-up, 's', on notify), else 0.
local K_SCHED = KEYS[1]
local fault = key_fault(K_SCHED, 'hash')
if fault then return redis.error_reply(fault) end
local removed = redis.call('HDEL', K_SCHED, ARGV[1])
if removed > 0 then redis.call('PUBLISH', KEYS[2], 's') end
return removed
