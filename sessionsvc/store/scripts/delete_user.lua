-- Delete a user: the record, every session (their tokens fail on their next
-- use), the events and the sign-in history, all at once: a failure leaves
-- all of it or none of it. Webhooks still hear of each session revoked
-- (reason user_deleted); the user's own event list is gone with the user.
-- KEYS: 1 user, 2 index, 3 events, 4 sign-in history ("known"), 5 activity
--       events, 6 user agents; last, the webhook stream when webhooks are on
--       (see events.lua)
-- ARGV: 1 now, 2 session key prefix, 3 events max, 4 events ttl,
--       5 event head, 6 event id, 7 the account and 8 the version the
--       caller read, or '' (any)
-- Returns false when there is no such user, 0 when it is not the account
-- and version the caller read (nothing changed), else the ids of the
-- sessions revoked.
local EV, EA = nil, nil
local NOW, EVENTS_MAX, EVENTS_TTL, EVENT_HEAD, EVENT_ID =
  ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
--@include events
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if ARGV[8] and ARGV[8] ~= '' then
  local u = redis.call('HMGET', KEYS[1], 'a', 'v')
  if u[1] ~= ARGV[7] or (u[2] or '0') ~= ARGV[8] then return 0 end
end
local revoked = {}
for _, sid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('DEL', ARGV[2] .. sid) == 1 then
    revoked[#revoked+1] = sid
    event('session.revoked', sid, 'user_deleted', '')
  end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return revoked
