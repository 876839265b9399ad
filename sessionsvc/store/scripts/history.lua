-- A user's security events: the newest of both lists, in one round trip
-- (the caller merges them by time).
-- KEYS: 1 events, 2 activity events
-- ARGV: 1 how many of each
-- Returns {{events...}, {activity events...}}, each newest first.
local last = tonumber(ARGV[1]) - 1
return {redis.call('LRANGE', KEYS[1], 0, last), redis.call('LRANGE', KEYS[2], 0, last)}
