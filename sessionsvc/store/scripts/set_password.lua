-- Replace a user's password hash, only if it is still the one the caller
-- checked (two changes at once: one wins, the other changes nothing).
-- KEYS: 1 user
-- ARGV: 1 the hash the caller checked, 2 the new hash,
--       3 when the password changed (epoch seconds), or '' for the same
--       password stored anew (a hash of an older scheme upgraded)
-- Returns 1 when replaced, 0 when the user is gone or the hash changed.
if redis.call('HGET', KEYS[1], 'p') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'p', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'pc', ARGV[3]) end
return 1
