-- heartbeat: declare that a live worker handles some types until now + ttl.
-- KEYS: the fixed layout of _lib.lua (uses handlers), then [15] workers: ZSET
--   "<byte length of worker>:<worker><type>" -> heartbeat expiry ms.
-- ARGV[1] ttl ms, ARGV[2] worker name ('' to name none), ARGV[3..] type names.
-- GT: a short-lived worker never shortens another worker's longer claim.
local K_WORKERS = KEYS[15]
local fault = key_fault(K_HANDLERS, 'zset') or key_fault(K_WORKERS, 'zset')
if fault then return redis.error_reply(fault) end
local now = now_ms()
local expiry = now + tonumber(ARGV[1])
local worker = ARGV[2]
local prefix = #worker .. ':' .. worker
-- In chunks of CHUNK / 2 pairs: unpack() of an unbounded list overflows Lua's stack.
for i = 3, #ARGV, CHUNK / 2 do
  local args, named = {}, {}
  for j = i, math.min(i + CHUNK / 2 - 1, #ARGV) do
    args[#args + 1] = expiry
    args[#args + 1] = ARGV[j]
    named[#named + 1] = expiry
    named[#named + 1] = prefix .. ARGV[j]
  end
  redis.call('ZADD', K_HANDLERS, 'GT', unpack(args))
  if worker ~= '' then redis.call('ZADD', K_WORKERS, unpack(named)) end
end
-- Workers that stopped beating are dropped here, so the set holds live ones only.
redis.call('ZREMRANGEBYSCORE', K_WORKERS, '-inf', now)
return #ARGV - 2
