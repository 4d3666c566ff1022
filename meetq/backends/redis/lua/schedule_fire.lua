-- schedule_fire: one fire step of a named schedule, a compare-and-set.
-- KEYS: the fixed layout of _lib.lua, the ready/delayed/lease triplet of the message's
--   type (none when no message is stored), then last KEYS[#KEYS] sched (see
--   schedule_put.lua).
-- ARGV[1] name, ARGV[2] revision, ARGV[3] the next fire ms the caller read, ARGV[4] the
--   next fire ms to store; from ARGV[5] on, when present, one message laid out as
--   enqueue.lua's ARGV (T = 1, the type, 6 values).
-- Applies only when the stored record still has that revision and that next fire time:
-- then it stores the message exactly as enqueue.lua does (store_batch) and the new next
-- fire time, in this one script, and returns 1. Otherwise it writes nothing and
-- returns 0 (another process fired this step, or the schedule changed or went away).
-- Checks before it writes: a corrupt sched key or record, or a key the message would
-- be written to, is an error naming it with nothing written.
local K_SCHED = KEYS[#KEYS]
local fault = key_fault(K_SCHED, 'hash')
if fault then return redis.error_reply(fault) end
local held = redis.call('HGET', K_SCHED, ARGV[1])
if not held then return 0 end
local next_ms, rev, def = string.match(held, '^(%d+) (%S+) (.*)$')
if not next_ms then
  return redis.error_reply('meetq: corrupt key ' .. K_SCHED .. ': field ' .. ARGV[1]
    .. ' is not a meetq schedule record')
end
if rev ~= ARGV[2] or next_ms ~= ARGV[3] then return 0 end
if #ARGV > 4 then
  local _, store_fault = store_batch(ARGV, 5)
  if store_fault then return redis.error_reply(store_fault) end
end
redis.call('HSET', K_SCHED, ARGV[1], ARGV[4] .. ' ' .. rev .. ' ' .. def)
return 1
