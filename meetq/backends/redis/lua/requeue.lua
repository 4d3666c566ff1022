-- requeue: move dead letters back to ready, attempts reset, at the back of their priority.
-- KEYS: the fixed layout of _lib.lua, then one ready/delayed/lease triplet per type.
-- ARGV[1] T, [2 .. T+1] type names, then 3 values per dead letter: id, type index,
--   priority. An id no longer in the dead-letter queue is skipped.
-- Returns how many were moved.
local now = now_ms()
local ntypes = tonumber(ARGV[1])
local first = ntypes + 2
local fault = fixed_fault({1, 2, 3, 6, 8, 9, 10, 12}) or seq_fault()
if fault then return redis.error_reply(fault) end
for t = 1, ntypes do
  fault = key_fault(KEYS[12 + 3 * t], 'zset')
  if fault then return redis.error_reply(fault) end
end
local moved = {}
for o = first, #ARGV, 3 do
  if redis.call('ZSCORE', K_DEAD, ARGV[o]) then moved[#moved + 1] = o end
end
local k = #moved
if k > 0 then
  local seq = redis.call('INCRBY', K_SEQ, k) - k
  local ids, scores, ready_at = {}, {}, {}
  for j = 1, k do
    local o = moved[j]
    local id, t, p = ARGV[o], tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2])
    local s = (3 - p) * BAND + seq + j
    ids[j] = id
    scores[#scores + 1] = id
    scores[#scores + 1] = s
    ready_at[#ready_at + 1] = id
    ready_at[#ready_at + 1] = now
    redis.call('ZADD', KEYS[12 + 3 * t], s, id)
    count('waiting:' .. p, 1)
  end
  bulk('ZREM', K_DEAD, ids)
  bulk('HDEL', K_DINFO, ids)
  bulk('HDEL', K_ATT, ids)
  bulk('HSET', K_SCORE, scores)
  bulk('HSET', K_READYAT, ready_at)
  local names = {}
  for t = 1, ntypes do names[t] = ARGV[t + 1] end
  bulk('SADD', K_TYPES, names)
  flush_counts()
  redis.call('PUBLISH', K_NOTIFY, '1')
end
return k
