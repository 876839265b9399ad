-- The review of flagged sessions ("Was this you?"), shared by confirm.lua and
-- deny.lua. A session is flagged when it has risk flags: from its sign-in
-- ('rk'), an anomaly ('an') or impossible travel ('at') while in use; it is
-- pending while flagged and not confirmed ('rv': when it was).
-- Whether session hash `key` is there and was last seen at `cutoff` or later
-- (one unused longer is dead by the idle timeout: 0 is no cutoff).
local function live(key, cutoff)
  local seen = redis.call('HGET', key, 't')
  if not seen then return false end
  return tonumber(seen) >= tonumber(cutoff)
end
-- Whether session hash `key` has risk flags, and whether it was confirmed.
local function review(key)
  local f = redis.call('HMGET', key, 'rk', 'an', 'at', 'rv')
  return ((f[1] and f[1] ~= '') or f[2] or f[3]) and true or false, f[4] and true or false
end
local function pending(key)
  local flagged, confirmed = review(key)
  return flagged and not confirmed
end
-- Who may answer: not the reviewed session itself, and only from a live
-- session that is not pending itself.
local function may_review(sid, caller_key, caller, cutoff)
  return sid ~= caller and live(caller_key, cutoff) and not pending(caller_key)
end
