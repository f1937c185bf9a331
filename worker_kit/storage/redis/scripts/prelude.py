"""The prelude every endpoint script starts with: its key helpers and the steps several scripts share
(a state move, an ending, a requeue, applying output items), and the report check of APPEND and FINISH.

The state sets and field lists are generated from storage/rules.py and job.py, so the Lua mirrors
one definition.
"""

from __future__ import annotations

from ....job import RETRYABLE_STATES, TERMINAL_STATES
from ... import rules

#: Records live this long (ms) in Redis past their retention before Redis's own expiry drops
#: them: the sweep deletes them first (keeping counts exact); expiry is the backstop.
EXPIRY_SLACK_MS = 3_600_000


def lua_set(values: object) -> str:
    return "{" + ", ".join(f"['{v}']=true" for v in sorted(map(str, values))) + "}"  # type: ignore[call-overload]


def lua_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


PRELUDE = f"""
local B = KEYS[1]
local TERMINAL = {lua_set(TERMINAL_STATES)}
local RETRYABLE = {lua_set(RETRYABLE_STATES)}
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
  redis.call('HDEL', k, {lua_list(rules.REQUEUE_CLEARS)})
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

# The report check of rules.check_report: a job ending or ended, or another token, is stale.
REPORT_CHECK = """
  local v = redis.call('HMGET', jk(id), 'state', 'token', 'ended_by', 'expires_at')
  if not v[1] or (v[4] and tonumber(v[4]) <= now) then return {'NOTFOUND'} end
"""
