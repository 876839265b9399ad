-- Disable, enable or give a user other roles. Disabling revokes every
-- session (reason user_disabled), so does a change of roles (roles_changed):
-- tokens carry roles, and none may outlive them.
-- KEYS: 1 user, 2 index, 3 events, 4 user agents; last, the webhook stream when webhooks
--       are on (see events.lua)
-- ARGV: 1 now, 2 session key prefix, 3 events max, 4 events ttl,
--       5 event head, 6 event id, 7 disabled: '1', '0' or '' (no change),
--       8 '1' to set the roles to 9 (comma-separated, '' for none),
--       10 the account and 11 the version the caller read, or '' (any)
-- Returns false when there is no such user, 0 when it is not the account
-- and version the caller read (nothing changed), else {reason or '',
-- revoked ids...}.
-- (Nothing here is recorded in the activity-event list.)
local EA = nil
local EV, NOW, EVENTS_MAX, EVENTS_TTL, EVENT_HEAD, EVENT_ID =
  3, ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local IDX, PREFIX = 2, ARGV[2]
--@include events
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if ARGV[11] and ARGV[11] ~= '' then
  local u = redis.call('HMGET', KEYS[1], 'a', 'v')
  if u[1] ~= ARGV[10] or (u[2] or '0') ~= ARGV[11] then return 0 end
end
local reason = ''
local enabled = false
local was = redis.call('HMGET', KEYS[1], 'd', 'roles')
if ARGV[7] == '1' and was[1] ~= '1' then
  redis.call('HSET', KEYS[1], 'd', '1')
  reason = 'user_disabled'
elseif ARGV[7] == '0' then
  enabled = redis.call('HDEL', KEYS[1], 'd') == 1
end
if ARGV[8] == '1' and (was[2] or '') ~= ARGV[9] then
  if ARGV[9] == '' then redis.call('HDEL', KEYS[1], 'roles')
  else redis.call('HSET', KEYS[1], 'roles', ARGV[9]) end
  if reason == '' then reason = 'roles_changed' end
end
-- A sign-in that checked the record before this change opens no session
-- after it (open.lua compares the version).
if reason ~= '' or enabled then redis.call('HINCRBY', KEYS[1], 'v', 1) end
if reason == '' then return {''} end
local revoked = revoke_all(reason, '')
if #revoked > 0 then keep_events() end
return {reason, unpack(revoked)}
