-- status: one message's live place and its kept facts, in one read (writes nothing).
-- KEYS: the fixed layout of _lib.lua, then one ready/delayed/lease triplet per type the
--   caller knows of, then the message's facts HASH (P t:<id>: error, progress, record;
--   written by track.lua, progress.lua, cancel.lua).
-- ARGV[1] id, [2] T = number of types.
-- Returns {where, type index, score, attempts, token, when ms, body, dead info, facts}:
--   where is 'ready', 'delayed', 'leased', 'dead', 'gone' (not stored), or 'elsewhere'
--   (stored under a type not passed: the reply then ends with every stored type, to
--   call again with); when is
--   the ms it became ready, comes due, or its lease deadline; facts is the HASH flat.
-- A key of the wrong type reads as absent: a status call never fails on a corrupt key.
local id, ntypes = ARGV[1], tonumber(ARGV[2])
local K_FACTS = KEYS[15 + 3 * ntypes]

local function read(cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then return false end
  return r
end
local facts = read('HGETALL', K_FACTS) or {}
local body = read('HGET', K_BODY, id) or ''
local attempts = read('HGET', K_ATT, id) or '0'
if read('ZSCORE', K_DEAD, id) then
  return {'dead', 0, '', attempts, '', '', body, read('HGET', K_DINFO, id) or '', facts}
end
local score = read('HGET', K_SCORE, id)
if not score then return {'gone', 0, '', '0', '', '', '', '', facts} end
for t = 1, ntypes do
  local base = 12 + 3 * t
  local s = read('ZSCORE', KEYS[base + 2], id)
  if s then
    return {'leased', t, score, attempts, read('HGET', K_TOKEN, id) or '', s, body, '', facts}
  end
  s = read('ZSCORE', KEYS[base + 1], id)
  if s then return {'delayed', t, score, attempts, '', s, body, '', facts} end
  if read('ZSCORE', KEYS[base], id) then
    return {'ready', t, score, attempts, '', read('HGET', K_READYAT, id) or '', body, '', facts}
  end
end
return {'elsewhere', 0, score, attempts, '', '', body, '', facts, read('SMEMBERS', K_TYPES) or {}}
