-- The decision of a change that takes a user out of the admins (a demotion,
-- a disable, a delete): the registry of the users who hold the admin role
-- and are not disabled drops the user only if another remains, so of two
-- admins removing each other at once one is refused. The user's own change
-- follows (its record is in another slot), under the lock of admin changes,
-- which the caller holds (see sessionsvc/accounts.py).
-- KEYS: 1 the registry (a set; its member '' marks it built), 2 the lock
-- ARGV: 1 the lock's token, 2 the user id, 3 '1' to drop it even if it is
--       the last (the CLI's --force)
-- Returns -2 when the lock is not the caller's (its lease ran out: nothing
-- changed), -1 when the registry cannot decide (there is none, or it lacks
-- the user, whom the caller found an admin, and holds no other: build it,
-- then ask again), 0 when the user is the last admin (nothing changed), 1
-- when dropped (or not a member while another is), 2 when dropped although
-- the last (forced).
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -2 end
if redis.call('SISMEMBER', KEYS[1], '') == 0 then return -1 end
if redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 0 then
  -- Every member is an admin (see sessionsvc/accounts.py): one remains.
  if redis.call('SCARD', KEYS[1]) > 1 then return 1 end
  return -1
end
local last = redis.call('SCARD', KEYS[1]) <= 2
if last and ARGV[3] ~= '1' then return 0 end
redis.call('SREM', KEYS[1], ARGV[2])
return last and 2 or 1
