-- enqueue_one: the common case of enqueue, one message without a dedup key, in as few
-- commands as possible (enqueue.lua handles batches and dedup keys): eleven when no
-- worker is parked on the type. Loaded after the head of _lib.lua only (its key names,
-- BAND, now_ms): it uses none of the helpers, whose definitions run on every call.
-- KEYS: the fixed layout of _lib.lua, then the ready/delayed/lease triplet of its type,
--   then KEYS[18] parked (HASH worker channel -> 'free lease_ms label') and KEYS[19] parked:T
--   (ZSET worker channel -> park deadline ms), both written by exchange.lua.
-- ARGV[1] id, ARGV[2] type, ARGV[3] priority (0..3), ARGV[4] delay ms, ARGV[5] body.
-- Returns 1 when stored, 0 when the id is taken (waiting, running or dead-lettered).
-- A corrupt key it would write: an error naming it, and nothing written, so the same
-- publish succeeds once the key is repaired.
--
-- Hand-off: when a worker is parked on this type (its last exchange claimed everything
-- of its types and left slots free) and nothing of the type is ready, the message is
-- leased here (attempt 1, a fresh token) and PUBLISHed on the worker's own channel, so
-- the worker starts it without a claim round trip. The lease stands only if the
-- PUBLISH reached a subscriber; else it is undone, the stale entry dropped, and the
-- message stored as ready as usual. A worker that dies after receiving it holds a
-- lease that expires: the message is delivered again (at-least-once).
local id, p, delay = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
if not (p and delay) or p < 0 or p > 3 or p % 1 ~= 0 then
  return redis.error_reply('meetq: enqueue: bad message 1 (id ' .. id .. ')')
end
-- The hot path of publish, so it checks nothing in advance: each write is a pcall, and
-- the first that fails undoes those before it (Redis would keep them), so a failed
-- publish leaves the state as it was and returns an error naming the key.
-- The body first, and only if absent: a stored body means the id is taken (waiting,
-- leased, or kept as a dead letter), and then nothing is written.
local fresh = redis.pcall('HSETNX', K_BODY, id, ARGV[5])
if type(fresh) == 'table' then
  return redis.error_reply('meetq: corrupt key ' .. K_BODY .. ': ' .. fresh.err)
end
if fresh == 0 then return 0 end
local undo = {{'HDEL', K_BODY, id}}
local function undo_all()
  for i = #undo, 1, -1 do redis.call(unpack(undo[i])) end
  undo = {}
end
local function write(back, cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then
    undo_all()
    error({err = 'meetq: corrupt key ' .. key .. ': ' .. cmd .. ' failed: ' .. r.err})
  end
  undo[#undo + 1] = back
  return r
end
-- A position taken and not used leaves a gap, which keeps the order: no undo needed.
local seq = write({'PING'}, 'INCR', K_SEQ)
local score = (3 - p) * BAND + seq
local now = now_ms()
write({'HDEL', K_SCORE, id}, 'HSET', K_SCORE, id, score)
if write({'PING'}, 'SADD', K_TYPES, ARGV[2]) == 1 then undo[#undo] = {'SREM', K_TYPES, ARGV[2]} end
write({'HINCRBY', K_COUNTS, 'published', -1}, 'HINCRBY', K_COUNTS, 'published', 1)
local ready = delay <= 0

-- A parked worker for it, or nil: first the live entries of parked:T (none unless a
-- worker of the type idles: one command, the usual way out), then nothing of the type
-- may be ready (a hand-off must not overtake it). Only reads, each a pcall: a corrupt
-- parked key means no hand-off (the message is stored as ready), never a failed publish.
local K_PARKED, K_PARKED_T = KEYS[18], KEYS[19]
local function parked_worker()
  local found = redis.pcall('ZREVRANGEBYSCORE', K_PARKED_T, '+inf', '(' .. now, 'LIMIT', 0, 3)
  if type(found) ~= 'table' or found.err or #found == 0 then return nil end
  local ahead = redis.pcall('ZCARD', KEYS[15])
  if type(ahead) ~= 'number' or ahead > 0 then return nil end
  for _, channel in ipairs(found) do
    local info = redis.pcall('HGET', K_PARKED, channel)
    local free, lease_ms, label
    if type(info) == 'string' then
      free, lease_ms, label = string.match(info, '^(%d+) (%d+) ?(.*)$')
      free, lease_ms = tonumber(free), tonumber(lease_ms)
    end
    if free and free > 0 and lease_ms > 0 then return channel, free, lease_ms, label end
    redis.pcall('ZREM', K_PARKED_T, channel) -- its worker is gone, busy or full: stale
  end
  return nil
end

local handed = false
if ready then
  local channel, free, lease_ms, label = parked_worker()
  if channel then
    local mark = #undo
    -- The worker's label and the start time lead the token (tracking: LeaseLabel).
    local token = (label or '') .. now .. '.h' .. seq
    write({'ZREM', KEYS[17], id}, 'ZADD', KEYS[17], now + lease_ms, id)
    write({'HDEL', K_TOKEN, id}, 'HSET', K_TOKEN, id, token)
    write({'HDEL', K_ATT, id}, 'HSET', K_ATT, id, 1)
    write({'HINCRBY', K_COUNTS, 'processing', -1}, 'HINCRBY', K_COUNTS, 'processing', 1)
    -- Every write of the lease is done before the PUBLISH: nothing after it can fail,
    -- so a worker never runs a message whose publish then failed.
    local header = table.concat({#id, #ARGV[2], #token, p, 1}, ' ')
    local heard = redis.call('PUBLISH', channel, header .. '\n' .. id .. ARGV[2] .. token .. ARGV[5])
    if heard > 0 then
      handed = true
      if free > 1 then
        redis.pcall('HSET', K_PARKED, channel, (free - 1) .. ' ' .. lease_ms .. ' ' .. label)
      else
        redis.pcall('HDEL', K_PARKED, channel)
      end
    else
      -- Nobody listens there any more: undo the lease, forget the entry, store it ready.
      for i = #undo, mark + 1, -1 do redis.call(unpack(undo[i])) end
      for i = #undo, mark + 1, -1 do undo[i] = nil end
      redis.pcall('HDEL', K_PARKED, channel)
      redis.pcall('ZREM', K_PARKED_T, channel)
    end
  end
end
if not handed then
  if ready then
    write({'ZREM', KEYS[15], id}, 'ZADD', KEYS[15], score, id)
    write({'HDEL', K_READYAT, id}, 'HSET', K_READYAT, id, now)
  else
    write({'ZREM', KEYS[16], id}, 'ZADD', KEYS[16], now + delay, id)
  end
  write({'PING'}, 'HINCRBY', K_COUNTS, 'waiting:' .. p, 1)
  if ready then redis.call('PUBLISH', K_NOTIFY, '1') end
end
return 1
