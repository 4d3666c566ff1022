-- exchange: apply settlements, make due/expired messages ready, lease up to `claim`.
-- KEYS: the fixed layout of _lib.lua, then one ready/delayed/lease triplet per type,
--   then parked (HASH worker channel -> 'free lease_ms label') and parked:T (ZSET worker
--   channel -> park deadline ms) of each of the C claimed types (see enqueue_one.lua),
--   then (last) limits (HASH type -> its token bucket: 'tokens ms', when last counted).
-- ARGV[1] lease ms, [2] claim, [3] token prefix, [4] dead-letter max size,
--   [5] dead-letter max age ms, [6] C = how many leading types to claim from,
--   [7] T = number of types, [8] the counter policy: per outcome code the counters a
--   settlement of it adds one to, 'a=processed;r=failed,retried;...' (core's rule,
--   passed as data), [9] the caller's hand-off channel ('' = it takes no hand-offs),
--   [10] how long a park holds (ms), [11 .. 10+T] type names (triplet order),
--   then 6 values per settlement: outcome (a ack, r retry, d dead, x drop, l release),
--   type index, id, token, delay ms (retry) or error (dead), traceback (dead),
--   then (last) the limits of the limited types among them (core's, as data):
--   'index concurrency tokens_per_ms bucket;...' (0 = no such limit; '' = none at all;
--   bucket = the most tokens kept, burst plus a grace under one: meetq/core/_limits.py).
-- Returns {settled flags as a '1'/'0' string, the faults (flat: type index, text naming
--   the corrupt key; usually empty), retry-after ms (> 0: a ready message of a claimed
--   type waits only for its rate limit's next token, due then), then per claimed
--   message: id, type index, priority, body, attempt, lease token}. Tokens are made
--   here (prefix .. n) and only returned.
--
-- Limits, applied here so every process together stays within them: a type with a
-- concurrency N is not leased while lease:T holds N (hand-offs included: a limited type
-- is never parked for, so enqueue_one never hands one off); a rate-limited type is
-- leased only for the whole tokens of its bucket (refilled on Redis TIME up to bucket,
-- floor(bucket) = burst when absent), one each. A held-back message stays ready,
-- uncharged; the other types and strict priority among what may run are unchanged. A
-- settlement that frees a concurrency slot of a type with ready messages wakes the
-- other workers.
--
-- Faults, checked before the first write (Redis keeps a failed script's writes):
-- - a corrupt fixed key or counter: nothing is written and the script returns an error
--   naming it; so a failed exchange charges no attempt and moves no message;
-- - a type whose ready/delayed/lease key holds the wrong type: that type is skipped
--   (its settlements refused, nothing claimed from it) and named in the faults, while
--   every other type keeps flowing; once repaired, its messages flow again, uncharged;
-- - a message whose score, attempts or body is corrupt: dead-lettered with an error
--   naming the key, its raw body kept; the counters stay true.
local now = now_ms()
local lease_ms, claim = tonumber(ARGV[1]), tonumber(ARGV[2])
local prefix = ARGV[3]
local dead_max, dead_age = tonumber(ARGV[4]), tonumber(ARGV[5])
local nclaim, ntypes = tonumber(ARGV[6]), tonumber(ARGV[7])
local channel, park_ms = ARGV[9], tonumber(ARGV[10])
local first = 11 + ntypes
local K_PARKED = KEYS[15 + 3 * ntypes]
local K_LIMITS = KEYS[#KEYS]
-- Limits by type index: {concurrency, tokens per ms, bucket}; absent = unlimited.
local limits, limited = {}, false
for t, c, r, b in string.gmatch(ARGV[#ARGV], '(%d+) (%d+) ([^ ;]+) ([^ ;]+)') do
  limits[tonumber(t)] = {tonumber(c), tonumber(r), tonumber(b)}
  limited = true
end
-- The counter policy: outcome code -> list of counter names.
local policy = {}
for code, names in string.gmatch(ARGV[8], '(%a)=([%w_,]*)') do
  local list = {}
  for name in string.gmatch(names, '[%w_]+') do list[#list + 1] = name end
  policy[code] = list
end
local function count_outcome(code)
  for _, name in ipairs(policy[code] or {}) do count(name, 1) end
end
local nsettle = (#ARGV - first) / 6
local wake = false
local dead_caps = {dead_max, dead_age}

-- (0) checks. The fixed keys first: one of them corrupt stops every type alike.
local fault = fixed_fault({1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
if fault then return redis.error_reply(fault) end
local faults, bad = {}, {}
for t = 1, ntypes do
  local e = type_fault(12 + 3 * t)
  if e then
    bad[t] = true
    faults[#faults + 1] = t
    faults[#faults + 1] = e
  end
end
-- A corrupt bucket key holds back every rate-limited type (a limit must not lapse),
-- named in the faults; settlements and the other types go on.
local limits_fault = limited and wrong_type(K_LIMITS, 'hash')
if limits_fault then
  for t = 1, nclaim do
    if limits[t] and limits[t][2] > 0 and not bad[t] then
      faults[#faults + 1] = t
      faults[#faults + 1] = limits_fault
    end
  end
end
local freed = {} -- concurrency-limited types a settlement gave a slot back to

-- (1) settlements: each applies only if its token is the current one and the message
-- is still in its lease ZSET, so a worker that lost its lease changes nothing.
local flags = {}
if nsettle > 0 then
  local ids = {}
  for i = 0, nsettle - 1 do ids[i + 1] = ARGV[first + i * 6 + 2] end
  local tokens = hmget(K_TOKEN, ids)
  local scores = hmget(K_SCORE, ids)
  local gone, unleased, dead, ready_at = {}, {}, {}, {}
  for i = 0, nsettle - 1 do
    local o = first + i * 6
    local code, t, id = ARGV[o], tonumber(ARGV[o + 1]), ARGV[o + 2]
    local base = 12 + 3 * t
    -- A skipped type's lease key is not touched: the settlement is refused.
    local ok = not bad[t] and tokens[i + 1] == ARGV[o + 3]
      and redis.call('ZREM', KEYS[base + 2], id) == 1
    if ok and limits[t] and limits[t][1] > 0 then freed[t] = true end
    local score = score_of(scores[i + 1])
    if ok and not score and code ~= 'a' and code ~= 'x' then
      -- Its place in the queue is lost with its score: it goes to the dead-letter queue.
      flags[i + 1] = '1'
      count('processing', -1)
      local why = field_fault(K_SCORE, id, scores[i + 1], 'a meetq score')
      local trace = ''
      -- It ends as a dead letter: counted as one, unless a release (never charged).
      if code ~= 'l' then count_outcome('d') end
      if code == 'd' then why, trace = ARGV[o + 4] .. ' (and ' .. why .. ')', ARGV[o + 5] end
      dead[#dead + 1] = {id, ARGV[10 + t], UNKNOWN_PRIORITY, why, trace}
    elseif ok then
      flags[i + 1] = '1'
      count('processing', -1)
      local p = score and priority_of(score)
      count_outcome(code)
      if code == 'a' then
        gone[#gone + 1] = id
      elseif code == 'r' then
        count('waiting:' .. p, 1)
        unleased[#unleased + 1] = id
        local delay = tonumber(ARGV[o + 4])
        if delay < 0 then delay = 0 end
        redis.call('ZADD', KEYS[base + 1], now + delay, id)
        -- Due at once: another idle worker may take it before we come back.
        if delay == 0 then wake = true end
      elseif code == 'l' then
        count('waiting:' .. p, 1)
        unleased[#unleased + 1] = id
        -- HSET, not HINCRBY: a corrupt count cannot make it fail halfway.
        local n = tonumber(redis.call('HGET', K_ATT, id)) or 1
        redis.call('HSET', K_ATT, id, math.max(n - 1, 0))
        redis.call('ZADD', KEYS[base], score, id)
        ready_at[#ready_at + 1] = id
        ready_at[#ready_at + 1] = now
        wake = true
      elseif code == 'd' then
        dead[#dead + 1] = {id, ARGV[10 + t], p, ARGV[o + 4], ARGV[o + 5]}
      else
        gone[#gone + 1] = id
      end
    else
      flags[i + 1] = '0'
    end
  end
  forget(gone, false)
  bulk('HDEL', K_TOKEN, unleased)
  bulk('HSET', K_READYAT, ready_at)
  bury(dead, now, dead_max, dead_age)
end

-- (2) and (3): only a caller that claims refreshes, like the in-memory queue.
local out = {table.concat(flags), faults, 0}
if claim > 0 and nclaim > 0 then
  local moved = 0
  local sound = {} -- the claimable types that passed the checks
  for t = 1, nclaim do
    if not bad[t] then
      sound[#sound + 1] = t
      moved = moved + promote(12 + 3 * t, now, ARGV[10 + t], dead_caps)
    end
  end

  -- How many of each limited type this claim may lease (after promote: an expired
  -- lease no longer counts), and the refilled buckets; only reads.
  local caps, buckets = {}, {}
  if limited then
    for _, t in ipairs(sound) do
      local lim = limits[t]
      if lim then
        local cap = claim
        if lim[1] > 0 then
          cap = math.min(cap, lim[1] - redis.call('ZCARD', KEYS[14 + 3 * t]))
        end
        if lim[2] > 0 then
          if limits_fault then
            cap = 0
          else
            -- A field meetq did not write counts as a full bucket (rewritten below).
            local v = redis.call('HGET', K_LIMITS, ARGV[10 + t])
            local had, at = string.match(v or '', '^(%d+%.?%d*) (%d+)$')
            local tokens = math.floor(lim[3])
            if had then
              local refill = math.max(0, now - tonumber(at)) * lim[2]
              tokens = math.min(lim[3], tonumber(had) + refill)
            end
            buckets[t] = tokens
            cap = math.min(cap, math.floor(tokens))
          end
        end
        caps[t] = math.max(cap, 0)
      end
    end
  end
  local open = sound -- the sound types a limit lets through now
  if limited then
    open = {}
    for _, t in ipairs(sound) do
      if (caps[t] or 1) > 0 then open[#open + 1] = t end
    end
  end

  -- Pick the `claim` best scores across the requested types' ready ZSETs.
  -- A limited type offers at most its cap, so the merge stops taking it there.
  local picked = {} -- flat: id, score, type index
  if #open == 1 then
    local t = open[1]
    local popped = redis.call('ZPOPMIN', KEYS[12 + 3 * t], caps[t] or claim)
    for i = 1, #popped, 2 do
      picked[#picked + 1] = popped[i]
      picked[#picked + 1] = tonumber(popped[i + 1])
      picked[#picked + 1] = t
    end
  elseif #open > 1 then
    local heads, pos, chosen = {}, {}, {}
    for _, t in ipairs(open) do
      local want = caps[t] or claim
      heads[t] = redis.call('ZRANGE', KEYS[12 + 3 * t], 0, want - 1, 'WITHSCORES')
      pos[t] = 1
    end
    for _ = 1, claim do
      local best, best_score = nil, nil
      for _, t in ipairs(open) do
        local s = heads[t][pos[t] + 1]
        if s then
          s = tonumber(s)
          if not best_score or s < best_score then best, best_score = t, s end
        end
      end
      if not best then break end
      local id = heads[best][pos[best]]
      pos[best] = pos[best] + 2
      picked[#picked + 1] = id
      picked[#picked + 1] = best_score
      picked[#picked + 1] = best
      local list = chosen[best] or {}
      chosen[best] = list
      list[#list + 1] = id
    end
    for t, list in pairs(chosen) do bulk('ZREM', KEYS[12 + 3 * t], list) end
  end

  local n = #picked / 3
  local leased = 0
  if n > 0 then
    local ids = {}
    for i = 1, n do ids[i] = picked[i * 3 - 2] end
    local bodies = hmget(K_BODY, ids)
    local attempts = hmget(K_ATT, ids)
    local deadline = now + lease_ms
    local tokens, leases, charged, corrupt = {}, {}, {}, {}
    for i = 1, n do
      local id, score, t = ids[i], picked[i * 3 - 1], picked[i * 3]
      local p = priority_of(score)
      local had = attempts[i]
      count('waiting:' .. p, -1)
      if had and not string.match(had, '^-?%d+$') then
        corrupt[#corrupt + 1] = {id, ARGV[10 + t], p,
          field_fault(K_ATT, id, had, 'an integer'), ''}
      elseif not bodies[i] then
        corrupt[#corrupt + 1] = {id, ARGV[10 + t], p,
          'meetq: corrupt key ' .. K_BODY .. ': no field ' .. id .. ' (the body is gone)', ''}
      else
        leased = leased + 1
        local attempt = (tonumber(had) or 0) + 1
        charged[#charged + 1] = id
        charged[#charged + 1] = attempt
        local token = prefix .. leased
        tokens[#tokens + 1] = id
        tokens[#tokens + 1] = token
        local list = leases[t] or {}
        leases[t] = list
        list[#list + 1] = deadline
        list[#list + 1] = id
        out[#out + 1] = id
        out[#out + 1] = t
        out[#out + 1] = p
        out[#out + 1] = bodies[i]
        out[#out + 1] = attempt
        out[#out + 1] = token
      end
    end
    bulk('HSET', K_ATT, charged)
    bulk('HSET', K_TOKEN, tokens)
    for t, list in pairs(leases) do bulk('ZADD', KEYS[14 + 3 * t], list) end
    count('processing', leased)
    bury(corrupt, now, dead_max, dead_age)
    for t, tokens in pairs(buckets) do
      local list = leases[t]
      if list then
        redis.call('HSET', K_LIMITS, ARGV[10 + t],
          string.format('%.6f %.0f', tokens - #list / 2, now))
        buckets[t] = tokens - #list / 2
      end
    end
  end
  -- When the next token comes for a type whose ready messages wait only for one (a
  -- full claim: the caller does not wait, so there is nothing to say).
  local retry_after = 0
  for t, tokens in pairs(n < claim and buckets or {}) do
    local lim = limits[t]
    if tokens < 1 and redis.call('ZCARD', KEYS[12 + 3 * t]) > 0
      and not (lim[1] > 0 and redis.call('ZCARD', KEYS[14 + 3 * t]) >= lim[1]) then
      local due = math.max(1, math.ceil((1 - tokens) / lim[2]))
      if retry_after == 0 or due < retry_after then retry_after = due end
    end
  end
  out[3] = retry_after
  -- Promoted more than we took: let other idle workers know.
  if moved > leased then wake = true end
  -- Park: this caller took everything of its types and has slots left, so a message
  -- published next may come straight to it (enqueue_one.lua). The park ends before the
  -- first of its types' delayed messages or leases comes due: those must go through a
  -- claim, in priority order. The parked keys are only a shortcut: checked here, just
  -- before their writes, and one corrupt means no parking, never a failed exchange.
  if channel ~= '' then
    local park = n < claim and #sound == nclaim and not wrong_type(K_PARKED, 'hash')
    for t = 1, nclaim do
      if park and wrong_type(KEYS[15 + 3 * ntypes + t], 'zset') then park = false end
    end
    local until_ms = now + park_ms
    -- A token due sooner: that message must be claimed in priority order, not bypassed.
    if retry_after > 0 and now + retry_after < until_ms then until_ms = now + retry_after end
    if park then
      for _, t in ipairs(sound) do
        for _, k in ipairs({KEYS[13 + 3 * t], KEYS[14 + 3 * t]}) do
          local head = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')[2]
          if head and tonumber(head) < until_ms then until_ms = tonumber(head) end
        end
      end
      park = until_ms > now
    end
    if park then
      for t = 1, nclaim do
        local k = KEYS[15 + 3 * ntypes + t]
        redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
        -- A limited type is never parked for: a hand-off would bypass its limit.
        if not limits[t] then redis.call('ZADD', k, until_ms, channel) end
      end
      -- Its token label (tracking: the worker's name, up to the last '~') goes along.
      redis.call('HSET', K_PARKED, channel, (claim - leased) .. ' ' .. lease_ms .. ' '
        .. (string.match(prefix, '^(.*~)') or ''))
    elseif redis.pcall('HDEL', K_PARKED, channel) == 1 then
      -- A busy worker pays this one HDEL; the rest only when it was parked.
      for t = 1, nclaim do redis.pcall('ZREM', KEYS[15 + 3 * ntypes + t], channel) end
    end
  end
elseif channel ~= '' then
  -- Claims nothing: no more hand-offs (a stopping or full worker).
  redis.pcall('HDEL', K_PARKED, channel)
end
-- A slot freed where messages wait for one: a worker held back by the limit claims.
for t in pairs(freed) do
  if redis.call('ZCARD', KEYS[12 + 3 * t]) > 0
    and redis.call('ZCARD', KEYS[14 + 3 * t]) < limits[t][1] then
    wake = true
  end
end
flush_counts()
if wake then redis.call('PUBLISH', K_NOTIFY, '1') end
return out
