-- Shared helpers, prepended to every meetq work-queue script; touches no key by itself.
--
-- KEYS (the same fixed layout for every script, all sharing the queue's hash tag):
--   1 m:body      HASH id -> encoded body (kept while dead-lettered)
--   2 m:score     HASH id -> ready score (position), set while waiting or leased
--   3 m:attempts  HASH id -> attempts charged so far
--   4 m:token     HASH id -> current lease token, set only while leased
--   5 m:dedup     HASH id -> dedup key it holds
--   6 m:ready_at  HASH id -> ms when it last became ready
--   7 dedup       HASH dedup key -> id
--   8 dead        ZSET id -> failed_at_ms * 1024 + tie-breaker (oldest first)
--   9 dinfo       HASH id -> json {error, traceback, attempts, failed_at, type, priority}
--  10 counts      HASH counters (published ... dropped, waiting:0..3, processing)
--  11 seq         STRING sequence for ready positions
--  12 types       SET of message types seen
--  13 handlers    ZSET type -> heartbeat expiry ms
--  14 notify      Pub/Sub channel for wake-ups (passed here only to keep one name list)
--  15.. one triplet per message type t (1-based): ready (ZSET id -> score),
--       delayed (ZSET id -> due ms), lease (ZSET id -> deadline ms) at 12 + 3 * t.
-- ARGV: see each script.

local unpack = unpack or table.unpack
local K_BODY, K_SCORE, K_ATT = KEYS[1], KEYS[2], KEYS[3]
local K_TOKEN, K_DEDUPKEY, K_READYAT = KEYS[4], KEYS[5], KEYS[6]
local K_DEDUP, K_DEAD, K_DINFO, K_COUNTS = KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local K_SEQ, K_TYPES, K_HANDLERS, K_NOTIFY = KEYS[11], KEYS[12], KEYS[13], KEYS[14]

-- A ready score is (3 - priority) * BAND + seq: one ZSET gives strict priority, then FIFO.
local BAND = 17592186044416 -- 2^44, written out so Lua 5.3+ keeps it an integer

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- enqueue_one.lua, the publish hot path, is loaded with the lines above only (cut at the
-- next line by _scripts.py): running the definitions below on every call cost about a
-- fifth of its time.
-- HEAD END
-- Lua's C stack holds about 8000 values: bulk commands go out in chunks of this many.
local CHUNK = 4000
-- Due delayed messages / expired leases moved per type per call: bounds script time.
local PROMOTE_MAX = 5000
-- Dead-letter scores are failed_at_ms * DEAD_SLOTS + n so ties keep failure order.
local DEAD_SLOTS = 1024

-- Redis keeps a failing script's earlier writes, so every script checks before it writes.
-- Whole-key faults (a key holding the wrong type, a counter that is not an integer) are
-- found with TYPE/HMGET before the first write; per-message faults (a field that is not
-- a number, a missing body) are found as each message is read, and that message is
-- dead-lettered with an error naming the key instead of raising halfway.
local FIXED_KIND = {
  'hash', 'hash', 'hash', 'hash', 'hash', 'hash', 'hash', 'zset', 'hash', 'hash',
  'string', 'set', 'zset',
}
local COUNT_FIELDS = {
  'published', 'processed', 'failed', 'retried', 'dead_letter', 'dropped',
  'waiting:0', 'waiting:1', 'waiting:2', 'waiting:3', 'processing', 'cancelled',
}

-- nil when `key` is absent or of `kind`, else a text naming the key and what it holds.
local function wrong_type(key, kind)
  local t = redis.call('TYPE', key)['ok']
  if t == kind or t == 'none' then return nil end
  return 'corrupt key ' .. key .. ': holds a ' .. t .. ', expected a ' .. kind
end

-- wrong_type as a script's error reply text.
local function key_fault(key, kind)
  local e = wrong_type(key, kind)
  return e and 'meetq: ' .. e
end

-- The fixed keys are shared by every type: one of them corrupt stops the whole queue
-- (nothing written, an error naming it). Checks KEYS[i] for each i in `which`, then the
-- counters (HINCRBY fails on a non-integer): `fields` of them, all when nil.
local function fixed_fault(which, fields)
  for _, i in ipairs(which) do
    local e = key_fault(KEYS[i], FIXED_KIND[i])
    if e then return e end
  end
  fields = fields or COUNT_FIELDS
  local values = redis.call('HMGET', K_COUNTS, unpack(fields))
  for i = 1, #fields do
    local v = values[i]
    if v and not string.match(v, '^-?%d+$') then
      return 'meetq: corrupt key ' .. K_COUNTS .. ': field ' .. fields[i] .. '=' .. v
        .. ' is not an integer'
    end
  end
  return nil
end

-- The sequence: INCRBY fails on a value that is not an integer.
local function seq_fault()
  local e = key_fault(K_SEQ, 'string')
  if e then return e end
  local v = redis.call('GET', K_SEQ)
  if v and not string.match(v, '^%d+$') then
    return 'meetq: corrupt key ' .. K_SEQ .. ': ' .. v .. ' is not an integer'
  end
  return nil
end

-- nil when the type's ready/delayed/lease keys (at KEYS[base..base+2]) are sound.
local function type_fault(base)
  return wrong_type(KEYS[base], 'zset') or wrong_type(KEYS[base + 1], 'zset')
    or wrong_type(KEYS[base + 2], 'zset')
end

local function priority_of(score)
  return 3 - math.floor(score / BAND)
end

-- A stored ready score as a number, or nil when it is not one meetq could have written.
local function score_of(v)
  local n = tonumber(v)
  if n and n >= 0 and n < 4 * BAND and n % 1 == 0 then return n end
  return nil
end

-- The error a message with a corrupt field is dead-lettered with: names key, id, value.
local function field_fault(key, id, v, expected)
  return 'meetq: corrupt key ' .. key .. ': field ' .. id .. '=' .. (v or '(missing)')
    .. ' is not ' .. expected
end
-- Priority given to a dead letter whose own priority is lost with its score (NORMAL).
local UNKNOWN_PRIORITY = 1

-- Run `cmd key <list...>` in chunks; pair lists stay aligned because CHUNK is even.
local function bulk(cmd, key, list)
  local n = #list
  for i = 1, n, CHUNK do
    redis.call(cmd, key, unpack(list, i, math.min(i + CHUNK - 1, n)))
  end
end

local function hmget(key, ids)
  local n = #ids
  if n == 0 then return {} end
  if n <= CHUNK then return redis.call('HMGET', key, unpack(ids)) end
  local out = {}
  for i = 1, n, CHUNK do
    local part = redis.call('HMGET', key, unpack(ids, i, math.min(i + CHUNK - 1, n)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end

-- Counter deltas are summed here and written once at the end (one HINCRBY per field).
local delta = {}
local function count(field, n)
  delta[field] = (delta[field] or 0) + n
end
local function flush_counts()
  for field, n in pairs(delta) do
    if n ~= 0 then redis.call('HINCRBY', K_COUNTS, field, n) end
  end
end

-- Remove every per-message field of `ids`; the body too unless it goes to the DLQ.
local function forget(ids, keep_body)
  if #ids == 0 then return end
  if redis.call('HLEN', K_DEDUPKEY) > 0 then
    local held = hmget(K_DEDUPKEY, ids)
    local dkeys = {}
    for i = 1, #held do
      if held[i] then dkeys[#dkeys + 1] = held[i] end
    end
    if #dkeys > 0 then
      bulk('HDEL', K_DEDUP, dkeys)
      bulk('HDEL', K_DEDUPKEY, ids)
    end
  end
  if not keep_body then bulk('HDEL', K_BODY, ids) end
  bulk('HDEL', K_SCORE, ids)
  bulk('HDEL', K_ATT, ids)
  bulk('HDEL', K_TOKEN, ids)
  bulk('HDEL', K_READYAT, ids)
end

local function purge_dead(ids)
  if #ids == 0 then return end
  bulk('ZREM', K_DEAD, ids)
  bulk('HDEL', K_DINFO, ids)
  bulk('HDEL', K_BODY, ids)
end

-- Enforce the DLQ caps: nothing older than max_age_ms, at most max_size entries.
local function trim_dead(now, max_size, max_age_ms)
  local cutoff = string.format('(%.0f', (now - max_age_ms) * DEAD_SLOTS)
  purge_dead(redis.call('ZRANGEBYSCORE', K_DEAD, '-inf', cutoff))
  local excess = redis.call('ZCARD', K_DEAD) - max_size
  if excess > 0 then purge_dead(redis.call('ZRANGE', K_DEAD, 0, excess - 1)) end
end

-- Dead-letter `entries` (each {id, type, priority, error, traceback}); they must already
-- be out of their ready/lease ZSET. The body stays in m:body, the reason beside it.
local function bury(entries, now, max_size, max_age_ms)
  if #entries == 0 then return end
  local ids = {}
  for i = 1, #entries do ids[i] = entries[i][1] end
  local attempts = hmget(K_ATT, ids)
  -- Scores only grow, so the DLQ keeps failure order even within one millisecond.
  local score = now * DEAD_SLOTS
  local last = redis.call('ZRANGE', K_DEAD, -1, -1, 'WITHSCORES')
  if last[2] and tonumber(last[2]) >= score then score = tonumber(last[2]) + 1 end
  local zargs, hargs = {}, {}
  for i = 1, #entries do
    local e = entries[i]
    zargs[#zargs + 1] = score
    zargs[#zargs + 1] = e[1]
    hargs[#hargs + 1] = e[1]
    hargs[#hargs + 1] = cjson.encode({
      error = e[4], traceback = e[5], attempts = tonumber(attempts[i]) or 0,
      failed_at = now, type = e[2], priority = e[3],
    })
    score = score + 1
  end
  forget(ids, true)
  bulk('ZADD', K_DEAD, zargs)
  bulk('HSET', K_DINFO, hargs)
  count('dead_letter', #entries)
  trim_dead(now, max_size, max_age_ms)
end

-- Due delayed messages and expired leases of the type `name` at KEYS[base..base+2]
-- become ready at their own position. One whose score is corrupt is dead-lettered with
-- an error naming the key (`dead` = {max size, max age ms}). Returns how many became
-- ready. The caller has checked the keys' types, so no write here can fail.
local function promote(base, now, name, dead)
  local ready, delayed, lease = KEYS[base], KEYS[base + 1], KEYS[base + 2]
  local moved = 0
  local corrupt = {}
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, PROMOTE_MAX)
  if #due > 0 then
    local scores = hmget(K_SCORE, due)
    local zargs, rargs = {}, {}
    for i = 1, #due do
      local s = score_of(scores[i])
      if s then
        zargs[#zargs + 1] = s
        zargs[#zargs + 1] = due[i]
        rargs[#rargs + 1] = due[i]
        rargs[#rargs + 1] = now
      elseif scores[i] then
        -- Its priority went with the score, so no waiting counter can be corrected.
        corrupt[#corrupt + 1] = {due[i], name, UNKNOWN_PRIORITY,
          field_fault(K_SCORE, due[i], scores[i], 'a meetq score'), ''}
      end
    end
    bulk('ZREM', delayed, due)
    bulk('ZADD', ready, zargs)
    bulk('HSET', K_READYAT, rargs)
    moved = moved + #rargs / 2
  end
  local expired = redis.call('ZRANGEBYSCORE', lease, '-inf', now, 'LIMIT', 0, PROMOTE_MAX)
  if #expired > 0 then
    local scores = hmget(K_SCORE, expired)
    local zargs, rargs = {}, {}
    for i = 1, #expired do
      local s = score_of(scores[i])
      if s then
        zargs[#zargs + 1] = s
        zargs[#zargs + 1] = expired[i]
        rargs[#rargs + 1] = expired[i]
        rargs[#rargs + 1] = now
        count('waiting:' .. priority_of(s), 1)
      elseif scores[i] then
        corrupt[#corrupt + 1] = {expired[i], name, UNKNOWN_PRIORITY,
          field_fault(K_SCORE, expired[i], scores[i], 'a meetq score'), ''}
      end
    end
    -- The attempt stays charged: the holder may have done part of the work.
    bulk('ZREM', lease, expired)
    bulk('HDEL', K_TOKEN, expired)
    bulk('ZADD', ready, zargs)
    bulk('HSET', K_READYAT, rargs)
    count('processing', -#expired)
    moved = moved + #rargs / 2
  end
  bury(corrupt, now, dead[1], dead[2])
  return moved
end

-- Store a batch of messages, all or nothing: enqueue.lua's whole work, shared with
-- schedule_fire.lua. The batch is laid out in A from A[at] on as enqueue.lua's ARGV is
-- (its header): T, T type names (KEYS triplet order), then 6 values per message.
-- Every key it may write is checked before its first write: returns nil and a fault
-- text with nothing written, else the dedup reply (see enqueue.lua) and nil.
local function store_batch(A, at)
  local now = now_ms()
  local WAITING = {'waiting:0', 'waiting:1', 'waiting:2', 'waiting:3'}
  local ntypes = tonumber(A[at])
  local first = at + ntypes + 1
  local n = (#A - first + 1) / 6

  -- Every key it may write is checked first: a corrupt one fails the whole batch with an
  -- error naming it and nothing stored, so the same publish succeeds once it is repaired.
  local fault = fixed_fault({1, 2, 5, 6, 7, 10, 12}) or seq_fault()
  if fault then return nil, fault end
  for t = 1, ntypes do
    local base = 12 + 3 * t
    fault = key_fault(KEYS[base], 'zset') or key_fault(KEYS[base + 1], 'zset')
    if fault then return nil, fault end
  end

  local ids = {}
  for i = 0, n - 1 do ids[i + 1] = A[first + i * 6] end
  -- A stored body means the id is taken: waiting, leased, or kept as a dead letter.
  local stored = hmget(K_BODY, ids)

  local out, fresh, seen_id, seen_key = {}, {}, {}, {}
  for i = 0, n - 1 do
    local o = first + i * 6
    local id, key = A[o], A[o + 4]
    local t, p, delay = tonumber(A[o + 1]), tonumber(A[o + 2]), tonumber(A[o + 3])
    -- Checked before the first write, so a bad message leaves the whole batch unstored.
    if not (t and p and delay) or t < 1 or t > ntypes or p < 0 or p > 3 or p % 1 ~= 0 then
      return nil, 'meetq: enqueue: bad message ' .. i + 1 .. ' (id ' .. id .. ')'
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
      local id, t, p = A[o], tonumber(A[o + 1]), tonumber(A[o + 2])
      local delay, key = tonumber(A[o + 3]), A[o + 4]
      local s = (3 - p) * BAND + seq + j
      body[#body + 1] = id
      body[#body + 1] = A[o + 5]
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
    for t = 1, ntypes do names[t] = A[at + t] end
    -- In chunks: unpack() of thousands of names overflows Lua's stack.
    bulk('SADD', K_TYPES, names)
    count('published', k)
    flush_counts()
    if woke then redis.call('PUBLISH', K_NOTIFY, '1') end
  end
  return out, nil
end
