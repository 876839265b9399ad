-- A user's security events: the newest of both lists, in one round trip
-- (the caller merges them by time).
-- KEYS: 1 events, 2 activity events, 3 user agents
-- ARGV: 1 how many of each
-- Returns {{events...}, {activity events...}, {digest, user agent, ...}}:
-- the lists newest first, and the user's interned user agents (a few).
--@include agents
local last = tonumber(ARGV[1]) - 1
return {redis.call('LRANGE', KEYS[1], 0, last), redis.call('LRANGE', KEYS[2], 0, last),
  all_agents(KEYS[3])}
