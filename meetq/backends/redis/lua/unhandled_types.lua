-- unhandled_types: the known message types no live worker handles right now.
-- KEYS: the fixed layout of _lib.lua (uses types and handlers).
-- ARGV: none.
-- Returns a list of type names (read-only; callers re-check in the script that acts).
local now = now_ms()
local out = {}
for _, t in ipairs(redis.call('SMEMBERS', K_TYPES)) do
  local expiry = redis.call('ZSCORE', K_HANDLERS, t)
  if not expiry or tonumber(expiry) <= now then out[#out + 1] = t end
end
return out
