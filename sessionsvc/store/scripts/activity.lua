-- Activity on a session: the revocation check's slow path (a write is due,
-- the address or the device changed, the idle timeout may have passed) and
-- every refresh-token check, in one atomic round trip. It never recreates a
-- session that is gone.
-- KEYS: 1 session, 2 index, 3 events, 4 activity events, 5 sign-in history
--       (the last located activity), and for a refresh in the standalone
--       service 6 the user record (the session's account must still be the
--       user's, not disabled; its roles are returned); then the user
--       agents; last, the webhook stream when webhooks are on (see events.lua)
-- ARGV: 1 now, 2 touch interval, 3 ip or '', 4 browser, 5 os (the request's
--       families; both '' when there is no request to compare), 6 '1' when
--       location is on, 7 the request's country, 8 city, 9 anomaly
--       signature, 10 '1' to revoke on an anomaly, 11 idle timeout (0: none),
--       12 sid, 13 events max, 14 events ttl, 15 event head, 16 event id,
--       17 presented refresh jti or '', 18 new refresh jti or '', 19 '1' when
--       the request's device is known (compare families), 20 the request's
--       place as JSON when it has coordinates, else '', 21 travel limits
--       ('max km/h,min km'), 22 the place's coordinates as stored ('' none),
--       23 the key that remembers a DPoP proof's jti, or '' (a key of the
--       user's slot, like the session keys revoke_all builds), 24 the
--       seconds it is remembered, 25 '1' when a bound token came without its
--       key (as Bearer, or with another key's proof)
-- Returns {status, expires_at, the user's roles or '', events recorded...};
-- status 0 gone, 1 alive, 2 refresh token reused, 3 idle, 4 anomaly, 5 the
-- user deleted or disabled (the last four: now revoked), 6 the DPoP proof
-- was accepted before (nothing changed), 7 a bound token without its key
-- (refused; recorded, or revoked with status 4 when anomalies revoke).
local EV, EA, KN, NOW, EVENTS_MAX, EVENTS_TTL, EVENT_HEAD, EVENT_ID =
  3, 4, 5, ARGV[1], ARGV[13], ARGV[14], ARGV[15], ARGV[16]
--@include events
--@include travel
local v = redis.call('HMGET', KEYS[1], 't', 'ip', 'b', 'o', 'cc', 'oc', 'an', 'x', 'r', 'a',
  'ak', 'at', 'ai', 'am', 'cip')
if not v[1] then return {0, 0, ''} end
local sid = ARGV[12]
local function revoke(status, reason)
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], sid)
  event('session.revoked', sid, reason, '')
  keep_events()
  return {status, 0, '', unpack(recorded)}
end
-- A bound token without its key is a theft signal: recorded at most once per
-- touch interval ('am': when it was last), and the attempt changes nothing
-- else. A replayed proof changes nothing at all.
if ARGV[25] == '1' then
  if not v[14] or tonumber(NOW) - tonumber(v[14]) >= tonumber(ARGV[2]) then
    event('session.anomaly', sid, '', '{"kind":"dpop_mismatch"}')
    if ARGV[10] == '1' then return revoke(4, 'anomaly') end
    redis.call('HSET', KEYS[1], 'am', NOW)
    keep_events()
  end
  return {7, 0, '', unpack(recorded)}
end
if ARGV[23] ~= '' and not redis.call('SET', ARGV[23], '1', 'NX', 'EX', ARGV[24]) then
  return {6, 0, ''}
end
local roles = ''
if #KEYS >= 6 and WH ~= 6 and AG ~= 6 then
  -- The account the session was opened for must still be the user's: a name
  -- deleted and created again is another account.
  local u = redis.call('HMGET', KEYS[6], 'p', 'a', 'd', 'roles')
  if not u[1] or (u[2] or '') ~= (v[10] or '') then return revoke(5, 'user_deleted') end
  if u[3] == '1' then return revoke(5, 'user_disabled') end
  roles = u[4] or ''
end
if ARGV[17] ~= '' and v[9] ~= ARGV[17] then return revoke(2, 'refresh_reuse') end
local idle = tonumber(ARGV[11])
if idle > 0 and tonumber(NOW) - tonumber(v[1]) >= idle then return revoke(3, 'idle') end
local write = {}
-- Anomalies are recorded at most once per touch interval per session and
-- kind, and so are address changes ('ak': a change of device or country,
-- 'at': impossible travel, 'ai': a new address hold when each was last
-- recorded), so a token used from two browsers or two addresses in turn
-- records an event a minute, not one a request.
local function due(last)
  return not last or tonumber(NOW) - tonumber(last) >= tonumber(ARGV[2])
end
-- Anomaly: another browser/OS family than the session opened with, or
-- another country than it was first seen in. Each distinct change is
-- recorded once (the signature of the last one is kept in 'an').
local changed = {}
-- A flag recorded now asks the user again: a confirmation ('rv') was of
-- what had been seen before.
local flagged = false
if ARGV[19] == '1' and (v[3] or v[4]) then
  if (v[3] or '') ~= ARGV[4] then
    changed[#changed+1] = '"browser":' .. from_to(v[3], ARGV[4])
  end
  if (v[4] or '') ~= ARGV[5] then
    changed[#changed+1] = '"os":' .. from_to(v[4], ARGV[5])
  end
end
local origin = v[6] or v[5]
if ARGV[6] == '1' and ARGV[7] ~= '' and origin and origin ~= ARGV[7] then
  changed[#changed+1] = '"country":' .. from_to(origin, ARGV[7])
end
if #changed > 0 and v[7] ~= ARGV[9] and due(v[11]) then
  event('session.anomaly', sid, '', '{' .. table.concat(changed, ',') .. '}')
  if ARGV[10] == '1' then return revoke(4, 'anomaly') end
  write[#write+1] = 'an'; write[#write+1] = ARGV[9]
  write[#write+1] = 'ak'; write[#write+1] = NOW
  flagged = true
end
if ARGV[3] ~= '' and ARGV[3] ~= v[2] then
  -- A new address: where is it, and could the user have got there in time?
  if ARGV[6] == '1' then
    local far = travel(ARGV[20], ARGV[21])
    if far and due(v[12]) then
      event('session.anomaly', sid, '', far)
      if ARGV[10] == '1' then return revoke(4, 'anomaly') end
      write[#write+1] = 'at'; write[#write+1] = NOW
      flagged = true
    end
  end
  if due(v[13]) then
    event('session.ip_changed', sid, '', from_to(v[2], ARGV[3]))
    write[#write+1] = 'ai'; write[#write+1] = NOW
  end
  -- A session opens without 'cip' (its address is the one it opened
  -- from): the first change keeps that address, '' for none.
  if not v[15] then write[#write+1] = 'cip'; write[#write+1] = v[2] or '' end
  write[#write+1] = 'ip'; write[#write+1] = ARGV[3]
  if ARGV[6] == '1' then
    -- The location follows the address; the first country is kept to compare.
    if v[5] and not v[6] and ARGV[7] ~= v[5] then
      write[#write+1] = 'oc'; write[#write+1] = v[5]
    end
    local gone = {}
    if ARGV[7] ~= '' then write[#write+1] = 'cc'; write[#write+1] = ARGV[7]
    else gone[#gone+1] = 'cc' end
    if ARGV[8] ~= '' then write[#write+1] = 'cy'; write[#write+1] = ARGV[8]
    else gone[#gone+1] = 'cy' end
    if ARGV[22] ~= '' then write[#write+1] = 'll'; write[#write+1] = ARGV[22]
    else gone[#gone+1] = 'll' end
    if #gone > 0 then redis.call('HDEL', KEYS[1], unpack(gone)) end
  end
end
if ARGV[18] ~= '' then
  write[#write+1] = 'r'; write[#write+1] = ARGV[18]
  write[#write+1] = 't'; write[#write+1] = NOW
elseif tonumber(NOW) - tonumber(v[1]) >= tonumber(ARGV[2]) then
  write[#write+1] = 't'; write[#write+1] = NOW
end
if #write > 0 then redis.call('HSET', KEYS[1], unpack(write)) end
if flagged then redis.call('HDEL', KEYS[1], 'rv') end
if #recorded > 0 then keep_events() end
return {1, tonumber(v[8]), roles, unpack(recorded)}
