-- Add a user record, written whole or not at all.
-- KEYS: 1 user
-- ARGV: field/value pairs
-- Returns 1 when created, 0 when the id is taken (nothing changed).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
