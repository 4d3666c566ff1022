-- enqueue: store a batch of messages, all or nothing (the script runs atomically and
-- does every check before its first write).
-- KEYS: the fixed layout of _lib.lua, then one ready/delayed/lease triplet per type.
-- ARGV[1] = T, the number of types; ARGV[2 .. T+1] = type names (triplet order);
--   then 6 values per message: id, type index (1..T), priority (0..3), delay ms,
--   dedup key ('' for none, else '=' .. key), body.
-- Returns {i1, id1, i2, id2, ...}: for each message i (1-based) that a dedup key turned
-- away, the id of the message already holding the key. Usually empty, so a batch reply
-- stays small.
local out, fault = store_batch(ARGV, 1)
if fault then return redis.error_reply(fault) end
return out
