-- enqueue: store a batch of messages, all or nothing (the script runs atomically and
-- does every check before its first write).
-- KEYS: the fixed layout of _lib.lua, then one ready/delayed/lease triplet per type.
-- ARGV[1] = T, the number of types; ARGV[2 .. T+1] = type names (triplet order);
--   then 6 values per message: id, type index (1..T), priority (0..3), delay ms,
--   dedup key ('' for none, else '=' .. key), body.
-- Returns {i1, id1, i2, id2, ...}: for each message i (1-based) that a dedup key turned
-- away, the id of the message already holding the key. Usually empty, so a batch reply
-- stays small.
local now = now_ms()
local WAITING = {'waiting:0', 'waiting:1', 'waiting:2', 'waiting:3'}
local ntypes = tonumber(ARGV[1])
local first = ntypes + 2
local n = (#ARGV - first + 1) / 6

-- Every key it may write is checked first: a corrupt one fails the whole batch with an
-- error naming it and nothing stored, so the same publish succeeds once it is repaired.
local fault = fixed_fault({1, 2, 5, 6, 7, 10, 12}) or seq_fault()
if fault then return redis.error_reply(fault) end
for t = 1, ntypes do
  local base = 12 + 3 * t
  fault = key_fault(KEYS[base], 'zset') or key_fault(KEYS[base + 1], 'zset')
  if fault then return redis.error_reply(fault) end
end

local ids = {}
for i = 0, n - 1 do ids[i + 1] = ARGV[first + i * 6] end
-- A stored body means the id is taken: waiting, leased, or kept as a dead letter.
local stored = hmget(K_BODY, ids)

local out, fresh, seen_id, seen_key = {}, {}, {}, {}
for i = 0, n - 1 do
  local o = first + i * 6
  local id, key = ARGV[o], ARGV[o + 4]
  local t, p, delay = tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3])
  -- Checked before the first write, so a bad message leaves the whole batch unstored.
  if not (t and p and delay) or t < 1 or t > ntypes or p < 0 or p > 3 or p % 1 ~= 0 then
    return redis.error_reply('meetq: enqueue: bad message ' .. i + 1 .. ' (id ' .. id .. ')')
  end
  local holder = nil
  if key ~= '' then
    holder = seen_key[key] or redis.call('HGET', K_DEDUP, key)
    if not holder then seen_key[key] = id end
  end
  if holder then
    out[#out + 1] = i + 1
    out[#out + 1] = holder
  else
    if not stored[i + 1] and not seen_id[id] then
      seen_id[id] = true
      fresh[#fresh + 1] = o
    end
  end
end

local k = #fresh
if k > 0 then
  -- One INCRBY reserves k consecutive positions; messages keep publish order.
  local seq = redis.call('INCRBY', K_SEQ, k) - k
  local body, score, ready_at, dedup, dedupkey = {}, {}, {}, {}, {}
  local ready, delayed = {}, {}
  local woke = false
  local waiting = {0, 0, 0, 0}
  for j = 1, k do
    local o = fresh[j]
    local id, t, p = ARGV[o], tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2])
    local delay, key = tonumber(ARGV[o + 3]), ARGV[o + 4]
    local s = (3 - p) * BAND + seq + j
    body[#body + 1] = id
    body[#body + 1] = ARGV[o + 5]
    score[#score + 1] = id
    score[#score + 1] = s
    local list
    if delay > 0 then
      list = delayed[t] or {}
      delayed[t] = list
      list[#list + 1] = now + delay
    else
      list = ready[t] or {}
      ready[t] = list
      list[#list + 1] = s
      ready_at[#ready_at + 1] = id
      ready_at[#ready_at + 1] = now
      woke = true
    end
    list[#list + 1] = id
    if key ~= '' then
      dedup[#dedup + 1] = key
      dedup[#dedup + 1] = id
      dedupkey[#dedupkey + 1] = id
      dedupkey[#dedupkey + 1] = key
    end
    waiting[p + 1] = waiting[p + 1] + 1
  end
  for p = 0, 3 do
    if waiting[p + 1] > 0 then count(WAITING[p + 1], waiting[p + 1]) end
  end
  bulk('HSET', K_BODY, body)
  bulk('HSET', K_SCORE, score)
  if #ready_at > 0 then bulk('HSET', K_READYAT, ready_at) end
  if #dedup > 0 then
    bulk('HSET', K_DEDUP, dedup)
    bulk('HSET', K_DEDUPKEY, dedupkey)
  end
  for t = 1, ntypes do
    local base = 12 + 3 * t
    if ready[t] then bulk('ZADD', KEYS[base], ready[t]) end
    if delayed[t] then bulk('ZADD', KEYS[base + 1], delayed[t]) end
  end
  local names = {}
  for t = 1, ntypes do names[t] = ARGV[t + 1] end
  -- In chunks: unpack() of thousands of names overflows Lua's stack.
  bulk('SADD', K_TYPES, names)
  count('published', k)
  flush_counts()
  if woke then redis.call('PUBLISH', K_NOTIFY, '1') end
end
return out
