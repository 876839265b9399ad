-- A webhook delivery is over: delivered (a 2xx), or not for this endpoint
-- (an event type it does not take). Acknowledged in the stream's consumer
-- group and dropped from the retries, whichever held it.
-- KEYS: 1 stream, 2 the endpoint's retry zset, 3 its pending-retry hash,
--       4 its counters
-- ARGV: 1 the endpoint's consumer group, 2 entry id, 3 '1' to count it delivered
-- Returns 1 when this call ended the delivery, 0 when another already had.
local held = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  + redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
if held == 0 then return 0 end
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[4], 'delivered', 1) end
return 1
