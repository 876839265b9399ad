-- A webhook delivery attempt failed (no 2xx in time): schedule the next
-- attempt after the next delay of the retry schedule, or, after the last,
-- park it as failed. Also parked at once when the endpoint already has
-- RETRY_MAX deliveries waiting (a dead receiver and a flood of events
-- cannot grow the retries without bound). By the server's clock.
-- KEYS: 1 stream, 2 the endpoint's retry zset, 3 its pending-retry hash,
--       4 its counters, 5 its list of parked deliveries
-- ARGV: 1 the endpoint's consumer group, 2 entry id, 3 the retry delays in
--       seconds ('5,300,...'), 4 the user's hash tag, 5 the event (JSON),
--       6 what went wrong, 7 RETRY_MAX, 8 how many parked deliveries to keep
-- Returns 'retrying', 'failed', or '' when another deliverer already ended it.
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
local held = redis.call('ZSCORE', KEYS[2], ARGV[2])
if acked == 0 and not held then return '' end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local attempts = 1
local before = redis.call('HGET', KEYS[3], ARGV[2])
if before then attempts = tonumber(string.match(before, '^(%d+)|')) + 1 end
local delays = {}
for delay in string.gmatch(ARGV[3], '%d+') do delays[#delays+1] = tonumber(delay) end
local function park(why)
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
  redis.call('LPUSH', KEYS[5], cjson.encode({id = ARGV[2], u = ARGV[4], e = ARGV[5],
    attempts = attempts, error = why, at = math.floor(now / 1000)}))
  redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[8]) - 1)
  redis.call('HINCRBY', KEYS[4], 'failed', 1)
  return 'failed'
end
if attempts > #delays then return park(ARGV[6]) end
if not held and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[7]) then
  return park('too many deliveries waiting for a retry; ' .. ARGV[6])
end
redis.call('ZADD', KEYS[2], now + delays[attempts] * 1000, ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], attempts .. '|' .. ARGV[4] .. '|' .. ARGV[5])
return 'retrying'
