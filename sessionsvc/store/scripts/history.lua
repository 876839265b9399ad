-- A user's security events: the newest of both lists, in one round trip
-- (the caller merges them by time).
-- KEYS: 1 events, 2 activity events, 3 user agents
-- ARGV: 1 how many of each
-- Returns {{events...}, {activity events...}, {digest, user agent, ...}}:
-- the lists newest first, and the interned user agents they refer to.
--@include agents
local last = tonumber(ARGV[1]) - 1
local lists = {redis.call('LRANGE', KEYS[1], 0, last), redis.call('LRANGE', KEYS[2], 0, last)}
local agents, seen = {}, {}
for _, list in ipairs(lists) do
  for _, e in ipairs(list) do
    -- Only the key can match: JSON escapes every '"' inside a string.
    local ref = string.match(e, '"uh":"([%w_%-]+)"')
    if ref and not seen[ref] then
      seen[ref] = true
      local text = agent_text(KEYS[3], ref)
      if text then agents[#agents+1] = ref; agents[#agents+1] = text end
    end
  end
end
return {lists[1], lists[2], agents}
