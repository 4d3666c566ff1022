-- enqueue_one: the common case of enqueue, one message without a dedup key, in as few
-- commands as possible (enqueue.lua handles batches and dedup keys).
-- KEYS: the fixed layout of _lib.lua, then the ready/delayed/lease triplet of its type.
-- ARGV[1] id, ARGV[2] type, ARGV[3] priority (0..3), ARGV[4] delay ms, ARGV[5] body.
-- Returns 1 when stored, 0 when the id is taken (waiting, running or dead-lettered).
-- A corrupt key it would write: an error naming it, and nothing written, so the same
-- publish succeeds once the key is repaired.
local id, p, delay = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
if not (p and delay) or p < 0 or p > 3 or p % 1 ~= 0 then
  return redis.error_reply('meetq: enqueue: bad message 1 (id ' .. id .. ')')
end
-- The hot path of publish, so it checks nothing in advance: each write is a pcall, and
-- the first that fails undoes those before it (Redis would keep them), so a failed
-- publish leaves the state as it was and returns an error naming the key.
-- A stored body means the id is taken: waiting, leased, or kept as a dead letter.
local taken = redis.pcall('HEXISTS', K_BODY, id)
if type(taken) == 'table' then
  return redis.error_reply('meetq: corrupt key ' .. K_BODY .. ': ' .. taken.err)
end
if taken == 1 then return 0 end
local undo = {}
local function write(back, cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then
    for i = #undo, 1, -1 do redis.call(unpack(undo[i])) end
    error({err = 'meetq: corrupt key ' .. key .. ': ' .. cmd .. ' failed: ' .. r.err})
  end
  undo[#undo + 1] = back
  return r
end
-- A position taken and not used leaves a gap, which keeps the order: no undo needed.
local score = (3 - p) * BAND + write({'PING'}, 'INCR', K_SEQ)
local now = now_ms()
write({'HDEL', K_BODY, id}, 'HSET', K_BODY, id, ARGV[5])
write({'HDEL', K_SCORE, id}, 'HSET', K_SCORE, id, score)
local ready = delay <= 0
if ready then
  write({'ZREM', KEYS[15], id}, 'ZADD', KEYS[15], score, id)
  write({'HDEL', K_READYAT, id}, 'HSET', K_READYAT, id, now)
else
  write({'ZREM', KEYS[16], id}, 'ZADD', KEYS[16], now + delay, id)
end
if write({'PING'}, 'SADD', K_TYPES, ARGV[2]) == 1 then undo[#undo] = {'SREM', K_TYPES, ARGV[2]} end
write({'HINCRBY', K_COUNTS, 'published', -1}, 'HINCRBY', K_COUNTS, 'published', 1)
write({'PING'}, 'HINCRBY', K_COUNTS, 'waiting:' .. p, 1)
if ready then redis.call('PUBLISH', K_NOTIFY, '1') end
return 1
