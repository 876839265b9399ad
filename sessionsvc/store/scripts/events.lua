-- Security events, shared by every script that records one (the loader puts
-- this file where such a script includes it). The script defines, before
-- the include: EV (the KEYS index of the user's event list), NOW,
-- EVENTS_MAX, EVENTS_TTL, EVENT_HEAD and EVENT_ID (from its ARGV); and EA,
-- the KEYS index of the user's activity-event list, if it records anomalies
-- or address changes. Those go to EA, capped on its own, so that however many
-- of them a token thief causes, the sign-ins and sign-outs in EV stay.
--
-- An event is one JSON string in the user's capped list, newest first.
-- Python encodes what it knows (EVENT_HEAD: '{"ip":...,"uh":<digest>,
-- "ua":<user agent>,', the user agent last, and "t":<epoch> first only when
-- it is not the second EVENT_ID was made in; '{' when it knows nothing) and
-- the script appends what only it knows: type (a one-letter code), session id, reason
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
-- script's is a key of the user), e the event, a the user's account (see
-- ACCOUNT below; absent when there is none). The audit writers read the
-- same stream (their own consumer group), so it is written whenever
-- webhooks or the audit trail are on. The stream is bounded: at
-- most about STREAM_MAX entries (whole nodes of 100 are trimmed), none older
-- than STREAM_AGE_MS. A script with EV = nil (a deleted user's events) only
-- queues its events.
--
-- User agents are interned per user: when the caller passes the user's
-- agents hash (its name ends in ':ag'; the last of KEYS, or the one before
-- the webhook stream), the user agent of the events kept in the user's
-- lists is stored there once, as its JSON text under its digest ("uh"),
-- and the events keep the digest only ('"uh":<digest>,'). The webhook stream
-- and the events returned get the whole head, without the digest
-- (WHOLE_HEAD). Python sends no digest for a user agent whose JSON text is
-- longer than codec.AGENT_TEXT_MAX: it stays whole. So does one whose
-- digest is already taken by another text, and one that finds the hash full
-- at AGENTS_MAX, unless some of the hash's user agents are no longer
-- referred to (prune_agents makes room). The hash lives at least as long as anything
-- that refers to it: EVENTS_TTL after each event, and the whole life of a
-- session that refers to it (open.lua).
local WH = nil
if #KEYS > 0 and string.sub(KEYS[#KEYS], -3) == ':wh' then WH = #KEYS end
local AG = WH and WH - 1 or #KEYS
-- The account behind the user when the event is recorded (field a of the
-- user store's record, P:{T}:user, beside KEYS[1] in the same slot; none for
-- a host app's users), read before the script changes anything: a name
-- deleted and created again is another account, and the audit trail tells
-- their events apart by it. Queued as field a of each stream entry.
local ACCOUNT = false
if WH then
  ACCOUNT = redis.call('HGET', string.match(KEYS[1], '^[^{]*{[^}]*}:') .. 'user', 'a')
end
if AG < 1 or string.sub(KEYS[AG], -3) ~= ':ag' then AG = nil end
-- At most AGENTS_MAX user agents (codec.AGENTS_MAX), and a look for ones to
-- drop at most every PRUNE_EVERY seconds (the time of the last in field 'p').
local AGENTS_MAX, PRUNE_EVERY = 24, 3600
--@include agents
-- Keep the agents hash, if there is one, for at least `seconds` more.
local function keep_agents(seconds)
  if AG and redis.call('TTL', KEYS[AG]) < tonumber(seconds) then
    redis.call('EXPIRE', KEYS[AG], seconds)
  end
end
-- Drop the user agents nothing refers to any more: no live session, no
-- kept event. Their keys are the agents hash's neighbours (P:{T}:ag beside
-- P:{T}:idx, P:{T}:s:<id>, P:{T}:ev and P:{T}:ea; see keys.py), in the same
-- slot. Runs only when the hash is full and a new user agent comes, at most
-- once per PRUNE_EVERY, and reads at most the user's sessions and both
-- event lists (both capped): about 2 ms of the server's time at the caps'
-- defaults (100 sessions, 1,000 events in each list).
local function prune_agents()
  local base = string.sub(KEYS[AG], 1, -3)
  local used = {}
  for _, sid in ipairs(redis.call('ZRANGE', base .. 'idx', 0, -1)) do
    local ref = redis.call('HGET', base .. 's:' .. sid, 'uh')
    if ref then used[ref] = true end
  end
  for _, list in ipairs({'ev', 'ea'}) do
    for _, e in ipairs(redis.call('LRANGE', base .. list, 0, -1)) do
      local ref = event_agent(e)
      if ref then used[ref] = true end
    end
  end
  local gone = {}
  for _, field in ipairs(redis.call('HKEYS', KEYS[AG])) do
    if #field >= AGENT_REF_LEN and not used[string.sub(field, 1, AGENT_REF_LEN)] then
      gone[#gone+1] = field
    end
  end
  -- In steps: Lua unpacks at most a few thousand values at once.
  for first = 1, #gone, 1000 do
    redis.call('HDEL', KEYS[AG], unpack(gone, first, math.min(first + 999, #gone)))
  end
end
-- Store user agent `text` (JSON) under `ref`; whether `ref` now stands for it.
local function intern(ref, text, seconds)
  if not AG then return false end
  local have = agent_text(KEYS[AG], ref)
  if not have then
    if agents_count(KEYS[AG]) >= AGENTS_MAX then
      local last = tonumber(redis.call('HGET', KEYS[AG], 'p')) or 0
      if tonumber(NOW) - last < PRUNE_EVERY then return false end
      prune_agents()
      redis.call('HSET', KEYS[AG], 'p', NOW)
      if agents_count(KEYS[AG]) >= AGENTS_MAX then return false end
    end
    store_agent(KEYS[AG], ref, text)
  elseif have ~= text then return false end
  keep_agents(seconds)
  return true
end
-- EVENT_HEAD without the digest (gsub's first result only).
local WHOLE_HEAD = (string.gsub(EVENT_HEAD, '"uh":"[%w_%-]+",', '', 1))
-- The head of the events kept in the user's lists: EVENT_HEAD with its user
-- agent interned, when it can be; false until first asked for.
local stored_head, head_ref = false, nil
local function kept_head()
  if stored_head then return stored_head end
  stored_head = EVENT_HEAD
  local at = string.find(EVENT_HEAD, ',"ua":', 1, true)
  local ref = event_agent(EVENT_HEAD)
  if at and ref then
    -- 'uh' comes right before 'ua': drop the user agent, keep the digest.
    if intern(ref, string.sub(EVENT_HEAD, at + 6, -2), EVENTS_TTL) then
      stored_head, head_ref = string.sub(EVENT_HEAD, 1, at), ref
    else
      -- Kept in the event: the digest stands for nothing here.
      stored_head = WHOLE_HEAD
    end
  end
  return stored_head
end
-- The digest that stands for EVENT_HEAD's user agent, once interned; nil
-- when it is kept whole.
local function head_agent()
  kept_head()
  return head_ref
end
local STREAM_MAX, STREAM_AGE_MS = 100000, 7 * 86400 * 1000
local stream_trimmed = false
local function queue(e)
  local tag = string.match(KEYS[1], '{([^}]*)}')
  local id
  if ACCOUNT then
    id = redis.call('XADD', KEYS[WH], 'MAXLEN', '~', STREAM_MAX, '*', 'u', tag, 'e', e, 'a', ACCOUNT)
  else
    id = redis.call('XADD', KEYS[WH], 'MAXLEN', '~', STREAM_MAX, '*', 'u', tag, 'e', e)
  end
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
-- Event types as stored: one letter each (codec.TYPE_CODES).
local TYPE_CODES = {
  ['session.created'] = 'c', ['session.revoked'] = 'r', ['session.ip_changed'] = 'i',
  ['session.anomaly'] = 'a', ['session.confirmed'] = 'v', ['password.changed'] = 'p',
}
local function event(kind, sid, reason, detail)
  event_seq = event_seq + 1
  local tail = '"k":"' .. (TYPE_CODES[kind] or kind) .. '","s":"' .. sid .. '","i":"'
    .. EVENT_ID .. '-' .. event_seq .. '"'
  if reason ~= '' then tail = tail .. ',"r":"' .. reason .. '"' end
  if detail and detail ~= '' then tail = tail .. ',"d":' .. detail end
  tail = tail .. '}'
  local e = WHOLE_HEAD .. tail
  local list = EV
  if EA and (kind == 'session.anomaly' or kind == 'session.ip_changed') then list = EA end
  if list then
    redis.call('LPUSH', KEYS[list], kept_head() .. tail)
    touched_lists[list] = true
  end
  if WH then queue(e) end
  recorded[#recorded+1] = e
end
-- Capped, and kept EVENTS_TTL after the last one: events outlive sessions,
-- and the user agents they refer to outlive them.
local function keep_events()
  for list in pairs(touched_lists) do
    redis.call('LTRIM', KEYS[list], 0, tonumber(EVENTS_MAX) - 1)
    redis.call('EXPIRE', KEYS[list], EVENTS_TTL)
  end
  if next(touched_lists) then keep_agents(EVENTS_TTL) end
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
