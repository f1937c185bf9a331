"""Maintenance in bounded steps: /purge-queue, a result's retention, and the sweep's three steps
(collect overdue jobs, apply the rules' decisions, delete records past their retention).

The steps that answer per-job facts or records pack the whole answer into ONE msgpack string
(cmsgpack, built into Redis's Lua): a batch of 100 records as RESP is some 5 000 elements that
the client's parser reads one by one on the service's event loop (~25 ms per batch without
hiredis); one string is one read and one C-speed unpack (records.unpack_reply).
"""

from __future__ import annotations

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
return cmsgpack.pack(out)
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
return cmsgpack.pack({
  due('run', now - grace, 'execution_timeout_ms'),
  due('ttlq', now, 'ttl_ms'),
  due('ttlr', now - grace, 'ttl_ms'),
  leases and due('lease', now, 'attempt') or {},
})
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
      out[#out + 1] = {'E', id, worker or '', brief(id)}
    end
  end
end
return cmsgpack.pack(out)
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
