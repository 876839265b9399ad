-- Set or clear a session's name. HSET on a missing key would create it:
-- only live sessions are renamed.
-- KEYS: 1 session
-- ARGV: the name's pieces as field/value pairs (none clears it; a
--       64-character name is at most 256 bytes: 4 pieces)
-- Returns 1 when the session was found, else 0.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], 'n', 'n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7')
if #ARGV > 0 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return 1
