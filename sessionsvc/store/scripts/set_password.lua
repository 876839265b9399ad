-- Store the same password's hash anew (a hash of an older scheme upgraded),
-- only if it is still the one the caller checked: an upgrade never
-- overwrites a change made meanwhile (see change_password.lua). The same
-- password: the record's version ('v') stays, so a sign-in in flight that
-- checked the older hash still opens its session (open.lua).
-- KEYS: 1 user
-- ARGV: 1 the hash the caller checked, 2 the new hash
-- Returns 1 when replaced, 0 when the user is gone or the hash changed.
if redis.call('HGET', KEYS[1], 'p') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'p', ARGV[2])
return 1
