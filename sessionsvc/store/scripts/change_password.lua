-- Change a user's password: the new hash, only if the old one is still the
-- one the caller checked (of two changes at once, one wins and the other
-- changes nothing), and every other session revoked (password_changed).
-- KEYS: 1 user, 2 index, 3 events, 4 user agents; last, the webhook stream when webhooks
--       are on (see events.lua)
-- ARGV: 1 now, 2 session key prefix, 3 events max, 4 events ttl,
--       5 event head, 6 event id, 7 the hash the caller checked, 8 the new
--       hash, 9 the session to keep (the caller's) or '' (revoke all)
-- Returns false when the user is gone or the hash changed, else the ids revoked.
-- (Nothing here is recorded in the activity-event list.)
local EA = nil
local EV, NOW, EVENTS_MAX, EVENTS_TTL, EVENT_HEAD, EVENT_ID =
  3, ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local IDX, PREFIX = 2, ARGV[2]
--@include events
if redis.call('HGET', KEYS[1], 'p') ~= ARGV[7] then return false end
redis.call('HSET', KEYS[1], 'p', ARGV[8], 'pc', NOW)
-- A sign-in that checked the old password opens no session after this (open.lua).
redis.call('HINCRBY', KEYS[1], 'v', 1)
local revoked = revoke_all('password_changed', ARGV[9])
event('password.changed', ARGV[9], '', '{"revoked":' .. #revoked .. '}')
keep_events()
return revoked
