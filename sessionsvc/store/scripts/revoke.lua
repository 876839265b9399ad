-- Delete sessions and record session.revoked for each, atomically.
-- KEYS: 1 index, 2 events, 3 user agents; last, the webhook stream when webhooks
--       are on (see events.lua)
-- ARGV: 1 now, 2 session key prefix, 3 events max, 4 events ttl,
--       5 event head, 6 event id, 7 reason, 8 sid to keep or '',
--       9 current sid or '', 10 reason for the current session,
--       11... the sids to revoke (none: every session in the index)
-- Returns the ids of the sessions it revoked.
-- (Nothing here is recorded in the activity-event list.)
local EA = nil
local EV, NOW, EVENTS_MAX, EVENTS_TTL, EVENT_HEAD, EVENT_ID =
  2, ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
--@include events
local targets
if #ARGV >= 11 then targets = {unpack(ARGV, 11)}
else targets = redis.call('ZRANGE', KEYS[1], 0, -1) end
local revoked = {}
for _, sid in ipairs(targets) do
  if sid ~= ARGV[8] then
    redis.call('ZREM', KEYS[1], sid)
    if redis.call('DEL', ARGV[2] .. sid) == 1 then
      revoked[#revoked+1] = sid
      if sid == ARGV[9] then event('session.revoked', sid, ARGV[10], '')
      else event('session.revoked', sid, ARGV[7], '') end
    end
  end
end
if #revoked > 0 then keep_events() end
return revoked
