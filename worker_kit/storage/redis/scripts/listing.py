"""list_jobs (GET /requests): an endpoint's recent jobs, newest first, paged."""

from __future__ import annotations

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
