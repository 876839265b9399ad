-- Deny a session ("No, secure my account"): revoke it and every other
-- session of the user whose review is pending (see review.lua), never the
-- caller's, recording session.revoked with the reason for each; atomic.
-- KEYS: 1 index, 2 events, 3 user agents; last, the webhook stream when
--       webhooks are on (see events.lua)
-- ARGV: 1 now, 2 session key prefix, 3 events max, 4 events ttl,
--       5 event head, 6 event id, 7 last-seen cutoff: a session last seen
--       before it is gone (0: none), 8 the session's id, 9 the caller's
--       session id, 10 the reason
-- Returns 0 when there is no such session, 1 when the caller may not answer
-- for it, else {the ids revoked, the denied session's first}.
local EA = nil
local EV, NOW, EVENTS_MAX, EVENTS_TTL, EVENT_HEAD, EVENT_ID =
  2, ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
--@include events
--@include review
local PREFIX, CUTOFF, SID, CALLER, REASON = ARGV[2], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
if not live(PREFIX .. SID, CUTOFF) then return 0 end
if not may_review(SID, PREFIX .. CALLER, CALLER, CUTOFF) then return 1 end
local revoked = {}
local function revoke(sid)
  redis.call('ZREM', KEYS[1], sid)
  redis.call('DEL', PREFIX .. sid)
  revoked[#revoked+1] = sid
  event('session.revoked', sid, REASON, '')
end
revoke(SID)
for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if sid ~= CALLER and live(PREFIX .. sid, CUTOFF) and pending(PREFIX .. sid) then revoke(sid) end
end
keep_events()
return revoked
