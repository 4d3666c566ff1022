-- requeue: move dead letters back to ready, attempts reset, at the back of their priority.
-- KEYS: the fixed layout of _lib.lua, then one ready/delayed/lease triplet per type.
-- ARGV[1] T, [2 .. T+1] type names, then 3 values per dead letter: id, type index,
--   priority. An id no longer in the dead-letter queue is skipped.
-- Returns how many were moved.
local now = now_ms()
local ntypes = tonumber(ARGV[1])
local first = ntypes + 2
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
  redis.call('SADD', K_TYPES, unpack(ARGV, 2, ntypes + 1))
  flush_counts()
  redis.call('PUBLISH', K_NOTIFY, '1')
end
return k
