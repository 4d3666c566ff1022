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
local fault = fixed_fault({1, 2, 6, 10, 12}) or seq_fault()
  or key_fault(KEYS[delay > 0 and 16 or 15], 'zset')
if fault then return redis.error_reply(fault) end
-- A stored body means the id is taken: waiting, leased, or kept as a dead letter.
if redis.call('HEXISTS', K_BODY, id) == 1 then return 0 end
local score = (3 - p) * BAND + redis.call('INCR', K_SEQ)
local now = now_ms()
redis.call('HSET', K_BODY, id, ARGV[5])
redis.call('HSET', K_SCORE, id, score)
redis.call('SADD', K_TYPES, ARGV[2])
redis.call('HINCRBY', K_COUNTS, 'published', 1)
redis.call('HINCRBY', K_COUNTS, 'waiting:' .. p, 1)
if delay > 0 then
  redis.call('ZADD', KEYS[16], now + delay, id)
else
  redis.call('ZADD', KEYS[15], score, id)
  redis.call('HSET', K_READYAT, id, now)
  redis.call('PUBLISH', K_NOTIFY, '1')
end
return 1
