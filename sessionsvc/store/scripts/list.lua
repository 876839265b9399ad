-- Every live session of a user, in one round trip; a session found idle
-- too long is revoked (reason 'idle') instead of listed.
-- KEYS: 1 index, 2 events, 3 user agents; last, the webhook stream when
--       webhooks are on (see events.lua)
-- ARGV: 1 now, 2 session key prefix, 3 idle timeout (0: none), 4 events max,
--       5 events ttl, 6 event head, 7 event id
-- Returns {{sid, {field, value, ...}, sid, ...}, {events recorded...},
-- {digest, user agent, ...}} (the user agents the sessions refer to by
-- digest, 'uh').
-- (Nothing here is recorded in the activity-event list.)
local EA = nil
local EV, NOW, EVENTS_MAX, EVENTS_TTL, EVENT_HEAD, EVENT_ID =
  2, ARGV[1], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
--@include events
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', NOW)
local idle = tonumber(ARGV[3])
local out, refs = {}, {}
for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[2] .. sid
  local h = redis.call('HGETALL', key)
  if #h == 0 then redis.call('ZREM', KEYS[1], sid)
  elseif idle > 0 and tonumber(NOW) - tonumber(redis.call('HGET', key, 't')) >= idle then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], sid)
    event('session.revoked', sid, 'idle', '')
  else
    out[#out+1] = sid; out[#out+1] = h
    for i = 1, #h, 2 do
      if h[i] == 'uh' then refs[#refs+1] = h[i+1] end
    end
  end
end
if #recorded > 0 then keep_events() end
return {out, recorded, agents_of(KEYS[3], refs)}
