"""A job's life: submit, claim, heartbeat, finish, cancel, retry, and the drain's hand-back."""

from __future__ import annotations

from ... import rules
from .prelude import REPORT_CHECK, lua_list

#: Queued entries a claim looks at beyond max_jobs, passing over jobs past their TTL (the sweep ends those).
CLAIM_SCAN_SLACK = 64


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

FINISH = f"""
local now, id, token, state = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
{REPORT_CHECK}
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
redis.call('HDEL', k, {lua_list(rules.RETRY_CLEARS)})
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
