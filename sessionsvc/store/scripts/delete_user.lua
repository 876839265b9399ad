-- Delete a user: the record, every session (their tokens fail on their next
-- use), the events and the sign-in history, all at once: a failure leaves
-- all of it or none of it.
-- KEYS: 1 user, 2 index, 3 events, 4 sign-in history ("known"), 5 activity events
-- ARGV: 1 session key prefix
-- Returns false when there is no such user, else the ids of the sessions revoked.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local revoked = {}
for _, sid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('DEL', ARGV[1] .. sid) == 1 then revoked[#revoked+1] = sid end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return revoked
