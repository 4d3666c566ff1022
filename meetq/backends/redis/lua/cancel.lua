-- cancel: remove one waiting, delayed or leased message so it never runs (again).
-- KEYS: the fixed layout of _lib.lua, then one ready/delayed/lease triplet per type the
--   caller knows of, then the message's facts HASH (P t:<id>, see status.lua).
-- ARGV[1] id, [2] T = number of types, [3] the finished record to keep (core's bytes),
--   [4] how long to keep it (ms), [5] the queue's cancel channel (P cancel).
-- Returns 1 when cancelled, 0 when the id is not stored or dead-lettered, or, when it is
--   stored under a type not passed, {-1, every stored type} (nothing written: call again
--   with them).
-- A leased message's lease ends here (its token is deleted, so the holder's settlement
-- is refused) and its holder is told on the cancel channel ('<id>\n<token>'); waiters of
-- result() on the facts key's channel. Checked before the first write: a corrupt key
-- it would write fails the call naming it, with nothing written.
local id, ntypes = ARGV[1], tonumber(ARGV[2])
local K_FACTS = KEYS[15 + 3 * ntypes]
local fields = {'waiting:0', 'waiting:1', 'waiting:2', 'waiting:3', 'processing', 'cancelled'}
local fault = fixed_fault({1, 2, 3, 4, 5, 6, 7, 8, 10}, fields)
  or key_fault(K_FACTS, 'hash')
if fault then return redis.error_reply(fault) end
if redis.call('ZSCORE', K_DEAD, id) then return 0 end
local score = score_of(redis.call('HGET', K_SCORE, id))
if not score then return 0 end
local found, token
for t = 1, ntypes do
  local base = 12 + 3 * t
  local e = type_fault(base)
  if e then return redis.error_reply('meetq: ' .. e) end
  if redis.call('ZSCORE', KEYS[base + 2], id) then
    found, token = KEYS[base + 2], redis.call('HGET', K_TOKEN, id)
  elseif redis.call('ZSCORE', KEYS[base + 1], id) then
    found = KEYS[base + 1]
  elseif redis.call('ZSCORE', KEYS[base], id) then
    found = KEYS[base]
  end
  if found then break end
end
if not found then
  local types = redis.pcall('SMEMBERS', K_TYPES)
  return {-1, type(types) == 'table' and not types.err and types or {}}
end
-- (writes) nothing below can fail: every key was checked above.
redis.call('ZREM', found, id)
if token then
  count('processing', -1)
else
  count('waiting:' .. priority_of(score), -1)
end
count('cancelled', 1)
forget({id}, false)
flush_counts()
redis.call('HSET', K_FACTS, 'record', ARGV[3])
redis.call('PEXPIRE', K_FACTS, ARGV[4])
redis.call('PUBLISH', K_FACTS, 'cancelled')
if token then redis.call('PUBLISH', ARGV[5], id .. '\n' .. token) end
return 1
