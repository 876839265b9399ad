-- Add users to the registry of admins (after the change that made them
-- admins: a promotion, an enable, a creation), or build it anew from the
-- user records; and release the lock of admin changes. Only while the lock
-- is the caller's: a holder whose lease ran out adds no one (the registry
-- then lacks an admin, which only ever refuses more: see accounts.py).
-- KEYS: 1 the registry (a set; its member '' marks it built), 2 the lock
-- ARGV: 1 the lock's token, 2 '2' to build the registry anew, '1' to make
--       it (empty) if there is none, '0' neither, 3 '1' to release the lock
--       after, 4... user ids
-- Returns 0 when the lock is not the caller's (nothing changed), else 1.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if ARGV[2] == '2' then redis.call('DEL', KEYS[1]) end
if ARGV[2] ~= '0' then redis.call('SADD', KEYS[1], '') end
-- Without a registry nothing is added: it is built when first needed.
if #ARGV >= 4 and redis.call('SISMEMBER', KEYS[1], '') == 1 then
  redis.call('SADD', KEYS[1], unpack(ARGV, 4))
end
if ARGV[3] == '1' then redis.call('DEL', KEYS[2]) end
return 1
