-- Forget the consumers of an endpoint's group that hold nothing and were
-- idle longer than a limit (deliverers that stopped); atomic, so a consumer
-- that reads an entry meanwhile is never deleted with it.
-- KEYS: 1 stream
-- ARGV: 1 the endpoint's consumer group, 2 idle limit (ms)
-- Returns how many consumers it deleted.
local deleted = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if tonumber(info['pending']) == 0 and tonumber(info['idle']) > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    deleted = deleted + 1
  end
end
return deleted
