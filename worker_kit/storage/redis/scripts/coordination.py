"""What replicas share: the webhook outbox of an endpoint, and leader leases (no prelude)."""

from __future__ import annotations

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
