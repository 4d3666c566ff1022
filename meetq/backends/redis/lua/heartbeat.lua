-- heartbeat: declare that a live worker handles some types until now + ttl.
-- KEYS: the fixed layout of _lib.lua (uses handlers).
-- ARGV[1] ttl ms, ARGV[2..] type names.
-- GT: a short-lived worker never shortens another worker's longer claim.
local expiry = now_ms() + tonumber(ARGV[1])
local args = {}
for i = 2, #ARGV do
  args[#args + 1] = expiry
  args[#args + 1] = ARGV[i]
end
if #args > 0 then redis.call('ZADD', K_HANDLERS, 'GT', unpack(args)) end
return #args / 2
