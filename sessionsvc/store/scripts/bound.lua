-- The revocation check of a DPoP-bound access token: the session read, and
-- the proof's jti remembered, in one round trip, so a proof is accepted once
-- in every worker and on every host. Nothing is written for a session that
-- is gone or a proof that was accepted before.
-- KEYS: 1 session, 2 the key that remembers the proof (the user's slot)
-- ARGV: 1 seconds the proof is remembered, 2 '1' to read the whole session
--       (HGETALL), else 3... the fields to read (HMGET)
-- Returns {0} when the session is gone, {6} when the proof was accepted
-- before, else {1, the fields' values...} (HGETALL: field, value, ...).
local v
if ARGV[2] == '1' then
  v = redis.call('HGETALL', KEYS[1])
else
  v = redis.call('HMGET', KEYS[1], unpack(ARGV, 3))
end
if not v[1] then return {0} end
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return {6} end
return {1, unpack(v)}
