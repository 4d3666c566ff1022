-- unhandled_types: the known message types no live worker handles right now.
-- KEYS: the fixed layout of _lib.lua (uses types and handlers).
-- ARGV: none.
-- Returns a list of type names (read-only; callers re-check in the script that acts).
local fault = key_fault(K_TYPES, 'set') or key_fault(K_HANDLERS, 'zset')
if fault then return redis.error_reply(fault) end
local now = now_ms()
local out = {}
for _, t in ipairs(redis.call('SMEMBERS', K_TYPES)) do
  local expiry = redis.call('ZSCORE', K_HANDLERS, t)
  if not expiry or tonumber(expiry) <= now then out[#out + 1] = t end
end
return out
