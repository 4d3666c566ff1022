-- track: keep what settlements leave behind (finished records, a retry's last error),
--   run just before the exchange that applies them, in the same round trip.
-- KEYS: KEYS[1] m:token (the fixed layout's 4th key), then one facts HASH (P t:<id>) per
--   entry.
-- ARGV: 5 values per entry: id, lease token, field ('record' or 'error'), value, keep ms.
-- Returns how many entries were kept. An entry is kept only while its token is the
-- current lease (a lost or cancelled lease keeps nothing); a 'record' wakes result()
-- waiters on the facts key's channel. A facts key of the wrong type is skipped (checked
-- before its write), so the settlements behind it still apply.
local kept = 0
for i = 0, #ARGV / 5 - 1 do
  local o = i * 5
  local id, token, field = ARGV[o + 1], ARGV[o + 2], ARGV[o + 3]
  local key = KEYS[2 + i]
  local current = redis.pcall('HGET', KEYS[1], id)
  if current == token and not wrong_type(key, 'hash') then
    redis.call('HSET', key, field, ARGV[o + 4])
    if redis.call('PTTL', key) < tonumber(ARGV[o + 5]) then
      redis.call('PEXPIRE', key, ARGV[o + 5])
    end
    if field == 'record' then redis.call('PUBLISH', key, 'done') end
    kept = kept + 1
  end
end
return kept
