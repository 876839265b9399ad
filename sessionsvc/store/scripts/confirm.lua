-- Confirm a flagged session ("Yes, it was me"): record when ('rv') and
-- session.confirmed, once; confirming it again changes nothing.
-- The device family and country that made the session new to the user
-- ('kd', 'kc', staged by open.lua) join the user's sign-in history then.
-- KEYS: 1 the session, 2 the caller's session, 3 events, 4 the sign-in
--       history ("known"), 5 user agents;
--       last, the webhook stream when webhooks are on (see events.lua)
-- ARGV: 1 now, 2 events max, 3 events ttl, 4 event head, 5 event id,
--       6 last-seen cutoff: a session last seen before it is gone (0: none),
--       7 the session's id, 8 the caller's session id
-- Returns 0 when there is no such session, 1 when the caller may not answer
-- for it (see review.lua), 2 when it has no risk flags, else {the session's
-- fields and values as HGETALL gives them, its user agent's JSON text when
-- it refers to one by digest ('uh') else false, the events recorded...}.
local EA = nil
local EV, NOW, EVENTS_MAX, EVENTS_TTL, EVENT_HEAD, EVENT_ID =
  3, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
--@include events
--@include review
--@include known
if not live(KEYS[1], ARGV[6]) then return 0 end
if not may_review(ARGV[7], KEYS[2], ARGV[8], ARGV[6]) then return 1 end
local flagged, confirmed = review(KEYS[1])
if not flagged then return 2 end
if not confirmed then
  redis.call('HSET', KEYS[1], 'rv', NOW)
  for _, field in ipairs(redis.call('HMGET', KEYS[1], 'kd', 'kc')) do
    if field and (redis.call('HEXISTS', KEYS[4], field) == 1
        or redis.call('HLEN', KEYS[4]) < KNOWN_MAX) then
      redis.call('HSET', KEYS[4], field, NOW)
      redis.call('EXPIRE', KEYS[4], EVENTS_TTL)
    end
  end
  redis.call('HDEL', KEYS[1], 'kd', 'kc')
  event('session.confirmed', ARGV[7], '', '')
  keep_events()
end
local ref = redis.call('HGET', KEYS[1], 'uh')
return {redis.call('HGETALL', KEYS[1]), ref and AG and agent_text(KEYS[AG], ref) or false,
  unpack(recorded)}
