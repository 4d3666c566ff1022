-- heartbeat: declare that a live worker handles some types until now + ttl.
-- KEYS: the fixed layout of _lib.lua (uses handlers).
-- ARGV[1] ttl ms, ARGV[2..] type names.
-- GT: a short-lived worker never shortens another worker's longer claim.
local fault = key_fault(K_HANDLERS, 'zset')
if fault then return redis.error_reply(fault) end
local expiry = now_ms() + tonumber(ARGV[1])
-- In chunks of CHUNK / 2 pairs: unpack() of an unbounded list overflows Lua's stack.
for i = 2, #ARGV, CHUNK / 2 do
  local args = {}
  for j = i, math.min(i + CHUNK / 2 - 1, #ARGV) do
    args[#args + 1] = expiry
    args[#args + 1] = ARGV[j]
  end
  redis.call('ZADD', K_HANDLERS, 'GT', unpack(args))
end
return #ARGV - 1
