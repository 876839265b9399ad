-- Take one webhook delivery that is due for a retry, leasing it: its due
-- time moves LEASE ms ahead, so if the deliverer that took it dies, another
-- takes it again once the lease is over. By the server's clock, the one
-- every deliverer shares.
-- KEYS: 1 the endpoint's retry zset, 2 its pending-retry hash
-- ARGV: 1 lease (ms)
-- Returns false when nothing is due, else {entry id, 'attempts|tag|event'}
-- ('' when the hash lost it: the caller drops it).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1)
if #due == 0 then return false end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), due[1])
return {due[1], redis.call('HGET', KEYS[2], due[1]) or ''}
