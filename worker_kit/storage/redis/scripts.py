"""The Lua scripts of the Redis backend: each state change of a job is one script, so it is atomic.

Every script works on the keys of ONE endpoint: KEYS[1] is the endpoint's key base
`PREFIX:{ENDPOINT}:` (keys.py), whose hash tag puts them all in one Redis Cluster slot, and
job keys are built from it. Time (`now`, epoch seconds) always comes from the caller's clock.

The rules are storage/rules.py's. Where a rule must be checked inside the script to be
atomic (a token check, the sequence check, what a retry or requeue clears), the script
mirrors it and the state sets and field lists are generated from rules.py and job.py below,
so there is one definition. Scripts answer facts and status words ('OK', 'NOTFOUND',
'STALE', 'GAP', 'CONFLICT'); the backend turns those into the rules' errors and messages.
"""

from __future__ import annotations

from ...job import RETRYABLE_STATES, TERMINAL_STATES
from .. import rules

#: Records live this long (ms) in Redis past their retention before Redis's own expiry drops
#: them: the sweep deletes them first (keeping counts exact); expiry is the backstop.
EXPIRY_SLACK_MS = 3_600_000
#: Queued entries a claim looks at beyond max_jobs, passing over jobs past their TTL (the sweep ends those).
CLAIM_SCAN_SLACK = 64


def _lua_set(values: object) -> str:
    return "{" + ", ".join(f"['{v}']=true" for v in sorted(map(str, values))) + "}"  # type: ignore[call-overload]


def _lua_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


PRELUDE = f"""
local B = KEYS[1]
local TERMINAL = {_lua_set(TERMINAL_STATES)}
local RETRYABLE = {_lua_set(RETRYABLE_STATES)}
local BY_WORKER, BY_SERVICE = '{rules.ENDED_BY_WORKER}', '{rules.ENDED_BY_SERVICE}'
local SLACK_MS = {EXPIRY_SLACK_MS}
local function jk(id) return B .. 'job:' .. id end
local function ck(id) return B .. 'chunks:' .. id end
local function fmt(x) return string.format('%.17g', x) end
local function opt(x) if x == nil or x == '' then return nil end return x end

-- The job's state, or nil when unknown or past its retention.
local function live(id, now)
  local v = redis.call('HMGET', jk(id), 'state', 'expires_at')
  if not v[1] then return nil end
  if v[2] and tonumber(v[2]) <= now then return nil end
  return v[1]
end

-- A job changes state: the counts per state, and the per-state listing index (list_jobs).
local function move(id, from, to, created)
  if from then
    redis.call('HINCRBY', B .. 'counts', from, -1)
    redis.call('ZREM', B .. 'recent:' .. from, id)
  end
  if to then
    redis.call('HINCRBY', B .. 'counts', to, 1)
    redis.call('ZADD', B .. 'recent:' .. to, created, id)
  end
end

-- Jobs a worker holds IN_PROGRESS, kept as it changes so workers() is one read.
local function held(worker, delta)
  if not worker then return end
  local n = redis.call('HINCRBY', B .. 'held', worker, delta)
  if n <= 0 then redis.call('HDEL', B .. 'held', worker) end
end

local function unindex(id)
  redis.call('ZREM', B .. 'queue', id)
  redis.call('ZREM', B .. 'run', id)
  redis.call('ZREM', B .. 'lease', id)
  redis.call('ZREM', B .. 'ttlq', id)
  redis.call('ZREM', B .. 'ttlr', id)
end

-- A job with a webhook ended: its delivery goes into the endpoint's outbox in the same script, so
-- no ending is stored without its webhook. The delivery id (endpoint|job-retries) is stable.
local function outbox_add(id, now)
  local v = redis.call('HMGET', jk(id), 'webhook', 'retries')
  if not v[1] then return end
  local hid = string.match(B, '{{(.*)}}:$') .. '|' .. id .. '-' .. (v[2] or '0')
  redis.call('HSET', B .. 'hook:' .. hid, 'id', hid, 'job_id', id, 'retries', v[2] or '0', 'url', v[1],
    'attempts', 0, 'created_at', fmt(now))
  redis.call('ZADD', B .. 'outbox', now, hid)
end

-- An active job ends in `state`: retention starts (indexed for the sweep; Redis expiry as the backstop).
local function end_job(id, state, now, ended_by, err)
  local k = jk(id)
  local cur = redis.call('HMGET', k, 'state', 'worker_id', 'retention_ms', 'created_at')
  local expires = now + tonumber(cur[3]) / 1000
  redis.call('HSET', k, 'state', state, 'finished_at', fmt(now), 'expires_at', fmt(expires),
    'ended_by', ended_by)
  redis.call('HDEL', k, 'lease_until')
  if err then redis.call('HSET', k, 'error', err) end
  unindex(id)
  redis.call('ZADD', B .. 'expiry', expires, state .. ':' .. id)
  move(id, cur[1], state, cur[4])
  if cur[1] == 'IN_PROGRESS' then held(cur[2], -1) end
  local ms = tonumber(cur[3]) + SLACK_MS
  redis.call('PEXPIRE', k, ms)
  redis.call('PEXPIRE', ck(id), ms)
  outbox_add(id, now)
  return cur[1], cur[2]
end

-- A running job back to the queue at its old position (rules.REQUEUE_CLEARS).
local function requeue(id, attempt_delta)
  local k = jk(id)
  local cur = redis.call('HMGET', k, 'worker_id', 'qpos', 'ttl_deadline', 'created_at')
  redis.call('HDEL', k, {_lua_list(rules.REQUEUE_CLEARS)})
  redis.call('HSET', k, 'state', 'IN_QUEUE', {", ".join(f"'{f}', 0" for f in rules.STREAM_RESETS)})
  if attempt_delta ~= 0 then redis.call('HINCRBY', k, 'attempt', attempt_delta) end
  redis.call('DEL', ck(id))
  unindex(id)
  redis.call('ZADD', B .. 'queue', cur[2], id)
  redis.call('ZADD', B .. 'ttlq', cur[3], id)
  move(id, 'IN_PROGRESS', 'IN_QUEUE', cur[4])
  held(cur[1], -1)
end

-- The record without its input (purge, stream reads: callers that only report or render status).
local function brief(id)
  local all = redis.call('HGETALL', jk(id))
  local out = {{}}
  for i = 1, #all, 2 do
    if all[i] ~= 'input' then out[#out + 1] = all[i]; out[#out + 1] = all[i + 1] end
  end
  return out
end

-- Stored as 'concurrency running seen_at'.
local function worker_seen(worker, running, concurrency, fallback, now)
  local conc = opt(concurrency)
  if not conc then
    local old = redis.call('HGET', B .. 'workers', worker)
    if old then conc = string.match(old, '^(%S+)') else conc = fallback end
  end
  redis.call('HSET', B .. 'workers', worker, conc .. ' ' .. running .. ' ' .. fmt(now))
end

-- Output items (seq, kind, blob triples from argv[i] on, sorted by seq): rules.fresh_items.
-- Returns the new next_seq and whether anything changed, or nil and the current next_seq on a gap.
local function apply_items(id, argv, i)
  local k = jk(id)
  local cur = redis.call('HMGET', k, 'next_seq', 'stream_len')
  local expected = tonumber(cur[1])
  local start = expected
  local chunks, progress = {{}}, nil
  while i <= #argv do
    local seq = tonumber(argv[i])
    if seq > expected then return nil, start end
    if seq == expected then
      if argv[i + 1] == 'chunk' then chunks[#chunks + 1] = argv[i + 2] else progress = argv[i + 2] end
      expected = expected + 1
    end
    i = i + 3
  end
  if expected == start then return start, false end
  for j = 1, #chunks, 100 do
    redis.call('RPUSH', ck(id), unpack(chunks, j, math.min(j + 99, #chunks)))
  end
  redis.call('HSET', k, 'next_seq', expected, 'stream_len', tonumber(cur[2]) + #chunks)
  if progress then redis.call('HSET', k, 'progress', progress) end
  return expected, true
end
"""

SUBMIT = """
local now, id, ttl_deadline = ARGV[1], ARGV[2], ARGV[3]
if ARGV[10] ~= '' then  -- queue_limit: rules.check_queue, decided here so replicas cannot overshoot it
  local depth = tonumber(redis.call('HGET', B .. 'counts', 'IN_QUEUE') or '0')
  if depth > tonumber(ARGV[10]) then return {'FULL', depth} end
end
local qpos = redis.call('INCR', B .. 'qpos')
redis.call('HSET', jk(id), 'id', id, 'state', 'IN_QUEUE', 'qpos', qpos, 'created_at', now,
  'ttl_deadline', ttl_deadline, 'execution_timeout_ms', ARGV[4], 'timeout_explicit', ARGV[5],
  'ttl_ms', ARGV[6],
  'retention_ms', ARGV[7], 'attempt', 0, 'retries', 0, 'next_seq', 0, 'stream_len', 0, 'read_cursor', 0,
  'input_size', #ARGV[9], 'input', ARGV[9])
if ARGV[8] ~= '' then redis.call('HSET', jk(id), 'webhook', ARGV[8]) end
redis.call('ZADD', B .. 'queue', qpos, id)
redis.call('ZADD', B .. 'ttlq', ttl_deadline, id)
redis.call('ZADD', B .. 'recent', now, id)
move(id, nil, 'IN_QUEUE', now)
return {'OK', qpos}
"""

CLAIM = """
local now, worker, max_jobs, lease_until = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4]
local max_bytes = opt(ARGV[6])
if max_bytes then max_bytes = tonumber(max_bytes) end
local before = tonumber(redis.call('HGET', B .. 'held', worker) or '0')
local ids = redis.call('ZRANGE', B .. 'queue', 0, max_jobs + CLAIM_SCAN_SLACK - 1)
local taken, total = {}, 0
for _, id in ipairs(ids) do
  if #taken >= max_jobs then break end
  local v = redis.call('HMGET', jk(id), 'ttl_deadline', 'input_size')
  if not v[1] then
    redis.call('ZREM', B .. 'queue', id)  -- dropped by Redis's expiry backstop: nothing to hand out
  elseif tonumber(v[1]) > now then  -- past its TTL: left for the sweep
    total = total + tonumber(v[2] or '0')
    if #taken > 0 and max_bytes and total > max_bytes then break end
    taken[#taken + 1] = id
  end
end
local out = {}
for n, id in ipairs(taken) do
  local k = jk(id)
  local deadline = now + tonumber(redis.call('HGET', k, 'execution_timeout_ms')) / 1000
  redis.call('HSET', k, 'state', 'IN_PROGRESS', 'token', ARGV[6 + n], 'worker_id', worker,
    'started_at', fmt(now), 'run_deadline', fmt(deadline), 'lease_until', lease_until, 'next_seq', 0)
  redis.call('HINCRBY', k, 'attempt', 1)
  redis.call('ZREM', B .. 'queue', id)
  local ttl = redis.call('HGET', k, 'ttl_deadline')
  redis.call('ZREM', B .. 'ttlq', id)
  redis.call('ZADD', B .. 'ttlr', ttl, id)
  redis.call('ZADD', B .. 'run', deadline, id)
  redis.call('ZADD', B .. 'lease', lease_until, id)
  out[n] = redis.call('HGETALL', k)
  move(id, 'IN_QUEUE', 'IN_PROGRESS', redis.call('HGET', k, 'created_at'))
end
if #taken > 0 then held(worker, #taken) end
worker_seen(worker, before + #taken, ARGV[5], before + max_jobs, now)
return out
""".replace("CLAIM_SCAN_SLACK", str(CLAIM_SCAN_SLACK))

HEARTBEAT = """
local now, worker, lease_until = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local out, pairs_n = {}, 0
for i = 6, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  pairs_n = pairs_n + 1
  local v = redis.call('HMGET', jk(id), 'state', 'token', 'ended_by', 'expires_at')
  if not v[1] or (v[4] and tonumber(v[4]) <= now) then
    out[#out + 1] = {'', '', ''}
  else
    if v[1] == 'IN_PROGRESS' and v[2] == token then  -- the lease is current: renew it
      redis.call('HSET', jk(id), 'lease_until', lease_until)
      redis.call('ZADD', B .. 'lease', lease_until, id)
    end
    out[#out + 1] = {v[1], v[2] or '', v[3] or ''}
  end
end
local reported = pairs_n
if ARGV[5] ~= '' then reported = tonumber(ARGV[5]) end
worker_seen(worker, reported, ARGV[4], math.max(reported, pairs_n), now)
return out
"""

# The report check of rules.check_report: a job ending or ended, or another token, is stale.
_REPORT_CHECK = """
  local v = redis.call('HMGET', jk(id), 'state', 'token', 'ended_by', 'expires_at')
  if not v[1] or (v[4] and tonumber(v[4]) <= now) then return {'NOTFOUND'} end
"""

APPEND = f"""
local now, id, token = tonumber(ARGV[1]), ARGV[2], ARGV[3]
{_REPORT_CHECK}
if TERMINAL[v[1]] or v[2] ~= token then return {{'STALE', v[1], v[2] or ''}} end
local nxt, changed = apply_items(id, ARGV, 4)
if not nxt then return {{'GAP', changed}} end
return {{'OK', nxt, changed and 1 or 0}}
"""

FINISH = f"""
local now, id, token, state = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
{_REPORT_CHECK}
if TERMINAL[v[1]] and v[2] == token and v[3] == BY_WORKER then  -- rules.is_repeat_finish
  return {{'OK', redis.call('HGETALL', jk(id)), 0}}
end
if TERMINAL[v[1]] or v[2] ~= token then return {{'STALE', v[1], v[2] or ''}} end
local nxt, gap_at = apply_items(id, ARGV, 11)
if not nxt then return {{'GAP', gap_at}} end
local err = nil
if ARGV[7] == '1' then err = ARGV[8] end
end_job(id, state, now, BY_WORKER, err)
local k = jk(id)
if ARGV[5] == '1' then redis.call('HSET', k, 'output', ARGV[6]) else redis.call('HDEL', k, 'output') end
if ARGV[9] == '1' then redis.call('HSET', k, 'error_detail', ARGV[10])
else redis.call('HDEL', k, 'error_detail') end
return {{'OK', redis.call('HGETALL', k), 1}}
"""

CANCEL = """
local now, id = tonumber(ARGV[1]), ARGV[2]
local state = live(id, now)
if not state then return {'NOTFOUND'} end
if TERMINAL[state] then return {'OK', redis.call('HGETALL', jk(id)), '', 0} end
local was, worker = end_job(id, 'CANCELLED', now, BY_SERVICE, nil)
if was ~= 'IN_PROGRESS' then worker = '' end
return {'OK', redis.call('HGETALL', jk(id)), worker or '', 1}
"""

RETRY = f"""
local now, id = tonumber(ARGV[1]), ARGV[2]
local state = live(id, now)
if not state then return {{'NOTFOUND'}} end
if not RETRYABLE[state] then return {{'CONFLICT', state}} end
local k = jk(id)
local qpos = redis.call('INCR', B .. 'qpos')
local ttl_deadline = now + tonumber(redis.call('HGET', k, 'ttl_ms')) / 1000
redis.call('HDEL', k, {_lua_list(rules.RETRY_CLEARS)})
redis.call('HSET', k, 'state', 'IN_QUEUE', 'qpos', qpos, 'created_at', fmt(now),
  'ttl_deadline', fmt(ttl_deadline), 'attempt', 0, {", ".join(f"'{f}', 0" for f in rules.STREAM_RESETS)})
redis.call('HINCRBY', k, 'retries', 1)
redis.call('DEL', ck(id))
redis.call('PERSIST', k)
redis.call('ZREM', B .. 'expiry', state .. ':' .. id)
redis.call('ZADD', B .. 'queue', qpos, id)
redis.call('ZADD', B .. 'ttlq', ttl_deadline, id)
redis.call('ZADD', B .. 'recent', now, id)
move(id, state, 'IN_QUEUE', now)
redis.call('HINCRBY', B .. 'counts', 'retried', 1)
return {{'OK', redis.call('HGETALL', k)}}
"""

RELEASE = """
local now, id, token = tonumber(ARGV[1]), ARGV[2], ARGV[3]
if live(id, now) ~= 'IN_PROGRESS' or redis.call('HGET', jk(id), 'token') ~= token then return 0 end
requeue(id, -1)  -- a drain hand-back does not use up an attempt
return 1
"""

PURGE = """
local now, limit, err = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local out = {}
for _, id in ipairs(redis.call('ZRANGE', B .. 'queue', 0, limit - 1)) do
  if redis.call('EXISTS', jk(id)) == 1 then
    end_job(id, 'CANCELLED', now, BY_SERVICE, err)
    out[#out + 1] = brief(id)
  else
    unindex(id)
  end
end
return out
"""

SET_RETENTION = """
local now, id, ttl_ms = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local state = live(id, now)
if not state then return {'NOTFOUND'} end
local k = jk(id)
if TERMINAL[state] then
  local expires = now + ttl_ms / 1000
  redis.call('HSET', k, 'expires_at', fmt(expires))
  redis.call('ZADD', B .. 'expiry', expires, state .. ':' .. id)
  redis.call('PEXPIRE', k, ttl_ms + SLACK_MS)
  redis.call('PEXPIRE', ck(id), ttl_ms + SLACK_MS)
else
  redis.call('HSET', k, 'retention_ms', ttl_ms)
end
return {'OK', redis.call('HGETALL', k)}
"""

# ARGV: now, id, cursor ('' = consume from the read cursor), max_bytes ('' = no bound).
READ_STREAM = """
local now, id = tonumber(ARGV[1]), ARGV[2]
if not live(id, now) then return {'NOTFOUND'} end
local k = jk(id)
local consume = ARGV[3] == ''
local start = consume and tonumber(redis.call('HGET', k, 'read_cursor')) or tonumber(ARGV[3])
local max_bytes = opt(ARGV[4])
local chunks = {}
if not max_bytes then
  chunks = redis.call('LRANGE', ck(id), start, -1)
else
  max_bytes = tonumber(max_bytes)
  local total, at, done = 0, start, false
  while not done do  -- pages of 16, so a bounded read never loads the whole stream into the script
    local page = redis.call('LRANGE', ck(id), at, at + 15)
    if #page == 0 then break end
    for _, blob in ipairs(page) do
      total = total + #blob
      if #chunks > 0 and total > max_bytes then done = true; break end
      chunks[#chunks + 1] = blob
    end
    at = at + #page
  end
end
if consume and #chunks > 0 then redis.call('HSET', k, 'read_cursor', start + #chunks) end
return {'OK', brief(id), start + #chunks, chunks}
"""

# The sweep, step 1 (reads only): up to ARGV[3] overdue jobs in all, with the facts rules.py needs.
SWEEP_COLLECT = """
local now, grace, limit, leases = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local function due(index, bound, field)  -- `limit` is shared by the kinds, as one batch's budget
  local out = {}
  if limit <= 0 then return out end
  local ids = redis.call('ZRANGEBYSCORE', B .. index, '-inf', '(' .. fmt(bound), 'LIMIT', 0, limit)
  limit = limit - #ids
  for _, id in ipairs(ids) do
    local v = redis.call('HMGET', jk(id), 'state', 'token', 'worker_id', field)
    out[#out + 1] = {id, v[1] or '', v[2] or '', v[3] or '', v[4] or '0'}
  end
  return out
end
return {
  due('run', now - grace, 'execution_timeout_ms'),
  due('ttlq', now, 'ttl_ms'),
  due('ttlr', now - grace, 'ttl_ms'),
  leases and due('lease', now, 'attempt') or {},
}
"""

# The sweep, step 2: apply each decision only if the job is still as collected and still overdue (a
# heartbeat, finish or another replica's sweep in between wins). ARGV: now, grace, then per job
# kind ('run', 'ttlq', 'ttlr', 'lease'), id, token, outcome state ('' = requeue), error.
SWEEP_APPLY = """
local now, grace = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 5 do
  local kind, id, token, state, err = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local v = redis.call('HMGET', jk(id), 'state', 'token', 'run_deadline', 'ttl_deadline', 'lease_until')
  local ok = (v[2] or '') == token
  if ok then
    if kind == 'run' then ok = v[1] == 'IN_PROGRESS' and tonumber(v[3]) < now - grace
    elseif kind == 'ttlq' then ok = v[1] == 'IN_QUEUE' and tonumber(v[4]) < now
    elseif kind == 'ttlr' then ok = v[1] == 'IN_PROGRESS' and tonumber(v[4]) < now - grace
    else ok = v[1] == 'IN_PROGRESS' and v[5] ~= false and tonumber(v[5]) < now end
  end
  if ok then
    if state == '' then
      local worker = redis.call('HGET', jk(id), 'worker_id')
      requeue(id, 0)
      redis.call('HINCRBY', B .. 'counts', 'retried', 1)
      out[#out + 1] = {'R', id, worker or ''}
    else
      local was, worker = end_job(id, state, now, BY_SERVICE, err)
      if was ~= 'IN_PROGRESS' then worker = '' end
      out[#out + 1] = {'E', id, worker or '', redis.call('HGETALL', jk(id))}
    end
  end
end
return out
"""

# The sweep, step 3: records past their retention are deleted (members of 'expiry' are STATE:ID,
# so counts stay exact even when Redis's expiry backstop dropped the record first); old workers forgotten.
SWEEP_EXPIRE = """
local now, limit, forget_before = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local gone = redis.call('ZRANGEBYSCORE', B .. 'expiry', '-inf', fmt(now), 'LIMIT', 0, limit)
local ids = {}
for _, member in ipairs(gone) do
  local sep = string.find(member, ':', 1, true)
  local state, id = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  for _, holder in ipairs(redis.call('SMEMBERS', B .. 'holders:' .. id)) do  -- held leases go with the record
    redis.call('HDEL', B .. 'hosted:' .. holder, id)
  end
  redis.call('DEL', jk(id), ck(id), B .. 'holders:' .. id)
  redis.call('ZREM', B .. 'expiry', member)
  redis.call('ZREM', B .. 'recent', id)
  move(id, state, nil, nil)
  ids[#ids + 1] = id
end
if limit > #gone then
  local workers = redis.call('HGETALL', B .. 'workers')
  for i = 1, #workers, 2 do
    local seen = tonumber(string.match(workers[i + 1], '(%S+)$'))
    if seen < forget_before then redis.call('HDEL', B .. 'workers', workers[i]) end
  end
end
return ids
"""

# list_jobs (reads only). ARGV: now, n (rows wanted per index), after's created_at ('' = from the newest),
# after's id, include payloads ('1'/'0'), then the index names to walk ('recent' or 'recent:STATE').
# Answers per index up to n {created_at, record} pairs, newest first, strictly after `after`.
LIST = """
local now, n, ascore, aid, io = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5] == '1'
local LIGHT_SKIP = {input = true, output = true, progress = true}
local function record(id)
  local all = redis.call('HGETALL', jk(id))
  if io then return all end
  local out = {}
  for i = 1, #all, 2 do
    if not LIGHT_SKIP[all[i]] then out[#out + 1] = all[i]; out[#out + 1] = all[i + 1] end
  end
  return out
end
local runs = {}
for i = 6, #ARGV do
  local key = B .. ARGV[i]
  local run = {}
  -- Start after `after`: by its rank when it is still in this index with that score (O(log n)),
  -- else by score, passing over ties that sort before it.
  local rank, by_score = 0, false
  if ascore ~= '' then
    local r, sc = redis.call('ZREVRANK', key, aid), redis.call('ZSCORE', key, aid)
    if r and sc and tonumber(sc) == tonumber(ascore) then rank = r + 1 else by_score = true end
  end
  local offset = 0
  while #run < n do
    local page
    if by_score then
      page = redis.call('ZREVRANGEBYSCORE', key, ascore, '-inf', 'WITHSCORES', 'LIMIT', offset, 100)
      offset = offset + 100
    else
      page = redis.call('ZREVRANGE', key, rank, rank + 99, 'WITHSCORES')
      rank = rank + 100
    end
    if #page == 0 then break end
    for j = 1, #page, 2 do
      local id, score = page[j], page[j + 1]
      local skip = by_score and tonumber(score) == tonumber(ascore) and id >= aid
      if not skip then
        local exp = redis.call('HGET', jk(id), 'expires_at')
        if exp == false or tonumber(exp) > now then  -- past retention: hidden, as get() does
          if redis.call('EXISTS', jk(id)) == 1 then run[#run + 1] = record(id) end
        end
      end
      if #run >= n then break end
    end
  end
  runs[#runs + 1] = run
end
return runs
"""

# The webhook outbox of one endpoint (storage/coordination.py). A delivery taken is leased by moving
# its due time to the lease's end: due again only if the taker dies before done/later.
TAKE_HOOKS = """
local now, limit, lease_until = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local out = {}
for _, hid in ipairs(redis.call('ZRANGEBYSCORE', B .. 'outbox', '-inf', fmt(now), 'LIMIT', 0, limit)) do
  local h = redis.call('HGETALL', B .. 'hook:' .. hid)
  if #h == 0 then
    redis.call('ZREM', B .. 'outbox', hid)
  else
    redis.call('ZADD', B .. 'outbox', lease_until, hid)
    out[#out + 1] = h
  end
end
return out
"""

HOOK_LATER = """
local now, hid = tonumber(ARGV[1]), ARGV[2]
if redis.call('EXISTS', B .. 'hook:' .. hid) == 0 then return 0 end
redis.call('HSET', B .. 'hook:' .. hid, 'attempts', ARGV[3], 'body', ARGV[5])
redis.call('ZADD', B .. 'outbox', now + tonumber(ARGV[4]) / 1000, hid)
return 1
"""

HOOK_DONE = """
redis.call('ZREM', B .. 'outbox', ARGV[2])
redis.call('DEL', B .. 'hook:' .. ARGV[2])
return 1
"""

# Leader leases (no prelude): KEYS[1] = PREFIX:lead:NAME; ARGV: owner, ttl_ms. Redis's own clock times them.
LEAD = """
local cur = redis.call('GET', KEYS[1])
if not cur or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""
