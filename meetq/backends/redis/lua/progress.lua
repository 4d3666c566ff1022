-- progress: keep a running delivery's progress report.
-- KEYS[1] m:token (the fixed layout's 4th key), KEYS[2] the facts HASH (P t:<id>).
-- ARGV[1] id, [2] lease token, [3] the report (core's bytes), [4] keep ms.
-- Returns 1 when kept, 0 when the token is not the current lease (nothing written).
-- Checked before its write: a facts key of the wrong type fails the call naming it.
local fault = key_fault(KEYS[2], 'hash')
if fault then return redis.error_reply(fault) end
if redis.pcall('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], 'progress', ARGV[3])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
return 1
