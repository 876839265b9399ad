-- Open a session: store it, compare it with the user's sign-in history (its
-- risk flags) and with the user's last located activity (impossible
-- travel), record session.created, evict the least recently active
-- sessions over the cap.
-- KEYS: 1 session, 2 index, 3 events, 4 sign-in history ("known"),
--       5 activity events, 6 the user record when a sign-in of the
--       standalone user store opens it (ARGV 16 not ''), then the user
--       agents; last, the webhook stream when webhooks are on (see events.lua)
-- ARGV: 1 now, 2 expires_at, 3 max sessions, 4 session key prefix,
--       5 events max, 6 events ttl, 7 event head, 8 event id, 9 sid,
--       10 device family or '', 11 country or '', 12 the client's address
--       group or '' (sign-ins from it pass the per-username login limit),
--       13 the client's place as JSON when it has coordinates, else '',
--       14 travel limits ('max km/h,min km'), 15 '1' when the session's
--       user agent is the event head's (then it is interned with it, and
--       the session keeps its digest, 'uh', for its 'ua' pieces),
--       16 the version of the user record the sign-in checked, or '' (no
--       user record), 17 the account it checked, 18... field/value pairs
-- Returns false on an id clash, 0 when the user record is no longer the
-- account and version the sign-in checked (deleted, or its password, roles
-- or disabled state changed since: nothing is stored), else {risk flags,
-- evicted session ids...}.
local EV, EA, KN, NOW, EVENTS_MAX, EVENTS_TTL, EVENT_HEAD, EVENT_ID =
  3, 5, 4, ARGV[1], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
--@include known
--@include events
--@include travel
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
if ARGV[16] ~= '' then
  -- The change that revoked the user's sessions may have come between the
  -- sign-in's read and now: a session opened after it would outlive it.
  local u = redis.call('HMGET', KEYS[6], 'a', 'v')
  if u[1] ~= ARGV[17] or (u[2] or '0') ~= ARGV[16] then return 0 end
end
local sid = ARGV[9]
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', NOW)
local ref = ARGV[15] == '1' and head_agent()
if ref then
  local fields = {'uh', ref}
  for i = 18, #ARGV, 2 do
    if not string.match(ARGV[i], '^ua%d*$') then
      fields[#fields+1] = ARGV[i]
      fields[#fields+1] = ARGV[i+1]
    end
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  -- As long as the session: until its own time, counted by the server's
  -- clock (a caller's clock ahead of it cannot cut the hash short).
  -- EXPIREAT's GT would do it in one command, but needs Redis 7.
  keep_agents(tonumber(ARGV[2]) - tonumber(redis.call('TIME')[1]))
else
  redis.call('HSET', KEYS[1], unpack(ARGV, 18))
end
-- Risk: a browser/OS family ('?' for one the parser cannot name) or a
-- country this user never signed in with (a user's very first sign-in has
-- nothing to compare with). The history is small and bounded: one field per
-- family or country. A new one joins it only when the user confirms the
-- session (confirm.lua, from the session's 'kd' and 'kc'): until then each
-- sign-in with it is flagged too, so a second sign-in from a thief's device
-- is no more trusted than the first.
local risk = {}
local history = redis.call('EXISTS', KEYS[4]) == 1
local function remember(field, flag, staged)
  if redis.call('HEXISTS', KEYS[4], field) == 1 then return end
  if history then
    risk[#risk+1] = flag
    redis.call('HSET', KEYS[1], staged, field)
  elseif redis.call('HLEN', KEYS[4]) < KNOWN_MAX then
    redis.call('HSET', KEYS[4], field, NOW)
  end
end
if ARGV[10] ~= '' then remember('d:' .. ARGV[10], 'new_device', 'kd') end
if ARGV[11] ~= '' then remember('c:' .. ARGV[11], 'new_country', 'kc') end
-- Where the user signs in from, kept fresh within the same bound.
if ARGV[12] ~= '' then
  local field = 'a:' .. ARGV[12]
  if redis.call('HEXISTS', KEYS[4], field) == 1 or redis.call('HLEN', KEYS[4]) < KNOWN_MAX then
    redis.call('HSET', KEYS[4], field, NOW)
  end
end
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('EXPIRE', KEYS[4], EVENTS_TTL) end
-- A sign-in from a place the user could not have reached since the last
-- located activity (recorded after session.created; 'at' rate-limits it
-- for the session, as activity does).
local far = travel(ARGV[13], ARGV[14])
if far then
  risk[#risk+1] = 'impossible_travel'
  redis.call('HSET', KEYS[1], 'at', NOW)
end
local risk_text = table.concat(risk, ',')
if risk_text ~= '' then redis.call('HSET', KEYS[1], 'rk', risk_text) end
redis.call('EXPIREAT', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], sid)
if risk_text ~= '' then
  event('session.created', sid, '', '{"risk":["' .. table.concat(risk, '","') .. '"]}')
else
  event('session.created', sid, '', '')
end
if far then event('session.anomaly', sid, '', far) end
local evicted = {}
local max = tonumber(ARGV[3])
if redis.call('ZCARD', KEYS[2]) > max then
  -- The least recently active first; of those last seen in the same
  -- second, the first opened (c, and cu: its microsecond), then by id.
  local live = {}
  for _, other in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if other ~= sid then
      local seen = redis.call('HMGET', ARGV[4] .. other, 't', 'c', 'cu')
      if seen[1] then
        local opened = (tonumber(seen[2]) or 0) + (tonumber(seen[3]) or 0) / 1000000
        live[#live+1] = {tonumber(seen[1]), opened, other}
      else redis.call('ZREM', KEYS[2], other) end
    end
  end
  table.sort(live, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    if a[2] ~= b[2] then return a[2] < b[2] end
    return a[3] < b[3]
  end)
  for i = 1, #live + 1 - max do
    local victim = live[i][3]
    redis.call('DEL', ARGV[4] .. victim)
    redis.call('ZREM', KEYS[2], victim)
    event('session.revoked', victim, 'evicted', '')
    evicted[#evicted+1] = victim
  end
end
keep_events()
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', KEYS[2], last[2])
return {risk_text, unpack(evicted)}
