-- extend: push held leases' deadlines to now + lease ms.
-- KEYS: the fixed layout of _lib.lua, then one ready/delayed/lease triplet per type.
-- ARGV[1] lease ms, then 3 values per lease: type index, id, token.
-- Returns a '1'/'0' string: whether each lease was still held (token current and
-- still in its lease ZSET).
local fault = key_fault(K_TOKEN, 'hash')
if fault then return redis.error_reply(fault) end
local now = now_ms()
local deadline = now + tonumber(ARGV[1])
local n = (#ARGV - 1) / 3
local ids = {}
for i = 0, n - 1 do ids[i + 1] = ARGV[3 + i * 3] end
local tokens = hmget(K_TOKEN, ids)
local flags = {}
for i = 0, n - 1 do
  local o = 2 + i * 3
  local lease, id = KEYS[14 + 3 * tonumber(ARGV[o])], ARGV[o + 1]
  -- A lease key of the wrong type is not touched: that lease reads as lost.
  if tokens[i + 1] == ARGV[o + 2] and not wrong_type(lease, 'zset')
    and redis.call('ZSCORE', lease, id) then
    redis.call('ZADD', lease, deadline, id)
    flags[i + 1] = '1'
  else
    flags[i + 1] = '0'
  end
end
return table.concat(flags)
