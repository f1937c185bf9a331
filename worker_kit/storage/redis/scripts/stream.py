"""A job's output stream: appending items (APPEND) and reading chunks (READ_STREAM)."""

from __future__ import annotations

from .prelude import REPORT_CHECK

APPEND = f"""
local now, id, token = tonumber(ARGV[1]), ARGV[2], ARGV[3]
{REPORT_CHECK}
if TERMINAL[v[1]] or v[2] ~= token then return {{'STALE', v[1], v[2] or ''}} end
local nxt, changed = apply_items(id, ARGV, 4)
if not nxt then return {{'GAP', changed}} end
return {{'OK', nxt, changed and 1 or 0}}
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
