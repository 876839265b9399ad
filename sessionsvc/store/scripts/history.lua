-- A user's security events: the newest of both lists, in one round trip
-- (the caller merges them by time).
-- KEYS: 1 events, 2 activity events, 3 user agents
-- ARGV: 1 how many of each
-- Returns {{events...}, {activity events...}, {digest, user agent, ...}}:
-- the lists newest first, and the interned user agents they refer to.
--@include agents
local last = tonumber(ARGV[1]) - 1
local lists = {redis.call('LRANGE', KEYS[1], 0, last), redis.call('LRANGE', KEYS[2], 0, last)}
local refs = {}
for _, list in ipairs(lists) do
  for _, e in ipairs(list) do refs[#refs+1] = event_agent(e) end
end
return {lists[1], lists[2], agents_of(KEYS[3], refs)}
