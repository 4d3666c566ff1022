-- schedule_put: create or replace one named schedule of the queue.
-- KEYS[1] sched (HASH name -> '<next fire ms> <revision> <definition>'), KEYS[2] notify.
-- ARGV[1] name, ARGV[2] next fire ms, ARGV[3] revision, ARGV[4] definition (core's JSON).
-- When the stored record has the same definition it is kept as it is (storing an
-- unchanged schedule again moves nothing), else the new one replaces it and a
-- schedule wake-up ('s') goes out on notify. Returns the stored {next, revision,
-- definition}. A sched key of another type: an error naming it, nothing written.
local K_SCHED = KEYS[1]
local fault = key_fault(K_SCHED, 'hash')
if fault then return redis.error_reply(fault) end
local held = redis.call('HGET', K_SCHED, ARGV[1])
if held then
  local next_ms, rev, def = string.match(held, '^(%d+) (%S+) (.*)$')
  if next_ms and def == ARGV[4] then return {next_ms, rev, def} end
end
redis.call('HSET', K_SCHED, ARGV[1], ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4])
redis.call('PUBLISH', KEYS[2], 's')
return {ARGV[2], ARGV[3], ARGV[4]}
