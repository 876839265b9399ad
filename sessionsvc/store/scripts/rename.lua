-- Set or clear a session's name, and read it back. HSET on a missing key
-- would create it: only live sessions are renamed, and with an idle timeout
-- not one unused too long (it is dead: revoked when next used or listed).
-- KEYS: 1 session, 2 user agents
-- ARGV: 1 last-seen cutoff: a session last seen before it is gone (0: none),
--       2... the name's pieces as field/value pairs (none clears it; a
--       64-character name is at most 256 bytes: 4 pieces)
-- Returns false when there is no such session, else {the session's fields
-- and values as HGETALL gives them, its user agent's JSON text when it
-- refers to one by digest ('uh'), else false}.
--@include agents
local seen = redis.call('HGET', KEYS[1], 't')
if not seen or tonumber(seen) < tonumber(ARGV[1]) then return false end
redis.call('HDEL', KEYS[1], 'n', 'n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7')
if #ARGV > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end
local ref = redis.call('HGET', KEYS[1], 'uh')
return {redis.call('HGETALL', KEYS[1]), ref and agent_text(KEYS[2], ref)}
