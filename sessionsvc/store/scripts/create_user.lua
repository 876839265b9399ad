-- Add a user record, written whole or not at all. A name created again is
-- another account: whatever the old one left under the name (sessions of a
-- record deleted by hand, its events, its sign-in history, its user agents)
-- is deleted, so
-- nothing of it reaches the new account.
-- KEYS: 1 user, 2 index, 3 events, 4 sign-in history ("known"), 5 activity
--       events, 6 user agents
-- ARGV: 1 session key prefix, 2... field/value pairs
-- Returns 0 when the id is taken (nothing changed), else {1, old session ids...}.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local gone = {}
for _, sid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('DEL', ARGV[1] .. sid) == 1 then gone[#gone+1] = sid end
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return {1, unpack(gone)}
