-- Security events, shared by every script that records one (the loader puts
-- this file where such a script includes it). The script defines, before
-- the include: EV (the KEYS index of the user's event list), NOW,
-- EVENTS_MAX, EVENTS_TTL, EVENT_HEAD and EVENT_ID (from its ARGV); and EA,
-- the KEYS index of the user's activity-event list, if it records anomalies
-- or address changes. Those go to EA, capped on its own, so that however many
-- of them a token thief causes, the sign-ins and sign-outs in EV stay.
--
-- An event is one JSON string in the user's capped list, newest first.
-- Python encodes what it knows (EVENT_HEAD: '{"t":<epoch>,"ip":...,"ua":...,')
-- and the script appends what only it knows: type, session id, reason
-- (fixed vocabularies and our own ids, nothing to escape), an id made of
-- EVENT_ID and a counter, and a detail object it builds with cjson. A list
-- rather than a stream: a new stream costs Redis 7 a preallocated 4 KiB
-- node per user, a short list a few hundred bytes. Every event a script
-- records is also returned (`recorded`), so the caller can log and signal it.
--
-- Webhooks: when they are on, the caller appends the webhook stream's key
-- (its name ends in ':wh', which no other key's does) as the last of KEYS,
-- and every event is also appended to that stream, in this same atomic step:
-- field u is the user's hash tag (from KEYS[1], which every recording
-- script's is a key of the user), e the event. The stream is bounded: at
-- most about STREAM_MAX entries (whole nodes of 100 are trimmed), none older
-- than STREAM_AGE_MS. A script with EV = nil (a deleted user's events) only
-- queues its events.
local WH = nil
if #KEYS > 0 and string.sub(KEYS[#KEYS], -3) == ':wh' then WH = #KEYS end
local STREAM_MAX, STREAM_AGE_MS = 100000, 7 * 86400 * 1000
local stream_trimmed = false
local function queue(e)
  local id = redis.call('XADD', KEYS[WH], 'MAXLEN', '~', STREAM_MAX, '*',
    'u', string.match(KEYS[1], '{([^}]*)}'), 'e', e)
  if not stream_trimmed then
    -- By the server's clock (the new entry's id), not the caller's.
    stream_trimmed = true
    local ms = tonumber(string.match(id, '^(%d+)'))
    redis.call('XTRIM', KEYS[WH], 'MINID', string.format('%d', ms - STREAM_AGE_MS))
  end
end
local event_seq = 0
local recorded = {}
local touched_lists = {}
local function event(kind, sid, reason, detail)
  event_seq = event_seq + 1
  local e = EVENT_HEAD .. '"k":"' .. kind .. '","s":"' .. sid .. '","i":"'
    .. EVENT_ID .. '-' .. event_seq .. '"'
  if reason ~= '' then e = e .. ',"r":"' .. reason .. '"' end
  if detail and detail ~= '' then e = e .. ',"d":' .. detail end
  e = e .. '}'
  local list = EV
  if EA and (kind == 'session.anomaly' or kind == 'session.ip_changed') then list = EA end
  if list then
    redis.call('LPUSH', KEYS[list], e)
    touched_lists[list] = true
  end
  if WH then queue(e) end
  recorded[#recorded+1] = e
end
-- Capped, and kept EVENTS_TTL after the last one: events outlive sessions.
local function keep_events()
  for list in pairs(touched_lists) do
    redis.call('LTRIM', KEYS[list], 0, tonumber(EVENTS_MAX) - 1)
    redis.call('EXPIRE', KEYS[list], EVENTS_TTL)
  end
end
-- A JSON string, or null for a missing or empty value.
local function json_str(s)
  if not s or s == '' then return 'null' end
  return cjson.encode(s)
end
local function from_to(before, after)
  return '{"from":' .. json_str(before) .. ',"to":' .. json_str(after) .. '}'
end
-- Revoke every session in the index KEYS[IDX] (session keys start with
-- PREFIX) but `keep`, recording session.revoked with `reason` for each.
-- The including script defines IDX and PREFIX. Returns the ids revoked.
local function revoke_all(reason, keep)
  local revoked = {}
  for _, sid in ipairs(redis.call('ZRANGE', KEYS[IDX], 0, -1)) do
    if sid ~= keep then
      redis.call('ZREM', KEYS[IDX], sid)
      if redis.call('DEL', PREFIX .. sid) == 1 then
        revoked[#revoked+1] = sid
        event('session.revoked', sid, reason, '')
      end
    end
  end
  return revoked
end
