-- Hand an audit writer its next batch from a stream (the audit writers'
-- consumer group on it), and count the entries the stream lost before any
-- writer stored them; atomic, so two writers never count one loss twice.
-- KEYS: 1 stream, 2 the group's counters (hash: 'read', the entries the
--       group was handed or lost since it was made; 'lost', those lost)
-- ARGV: 1 the group, 2 the consumer, 3 at most how many, 4 takeover (ms)
-- Returns {lost, entries}: entries ({id, {field, value, ...}}) held longer
-- than the takeover time by a writer that stopped, else new ones.
--
-- Losses: the stream is bounded (events.lua trims it by length and age).
-- An entry held by a writer that stopped and trimmed meanwhile is one
-- XAUTOCLAIM names as deleted. Unread entries trimmed show as a stream whose
-- first entry is newer than the last one the group was handed: then every
-- entry still there is unread, and those added but neither handed out nor
-- still there (entries-added - read - length) were lost.
local group, consumer, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, {}} end
local function fields(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
local function newer(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
local stream = fields(redis.call('XINFO', 'STREAM', KEYS[1]))
local added, length = tonumber(stream['entries-added']), tonumber(stream['length'])
local last = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = fields(g)
  if info['name'] == group then last = info['last-delivered-id'] end
end
local read = tonumber(redis.call('HGET', KEYS[2], 'read'))
if last == nil or read == nil then
  -- A new group (or a stream made again: a Redis restarted empty): it starts
  -- at the first entry there is; what was trimmed before is no loss of its.
  if last == nil then
    redis.call('XGROUP', 'CREATE', KEYS[1], group, '0')
    last = '0-0'
  end
  read = added - length
  redis.call('HSET', KEYS[2], 'read', read)
end
local claimed = redis.call('XAUTOCLAIM', KEYS[1], group, consumer, ARGV[4], '0-0', 'COUNT', count)
local lost = #(claimed[3] or {})
local entries = claimed[2]
if #entries == 0 then
  local first = stream['first-entry']
  if first and newer(first[1], last) then
    local gone = added - read - length
    if gone > 0 then
      lost = lost + gone
      read = read + gone
    end
  end
  local got = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count,
    'STREAMS', KEYS[1], '>')
  -- {{stream, entries}}; fakeredis leaves out the outer list.
  if got and type(got[1]) == 'table' then entries = got[1][2]
  elseif got and got[2] then entries = got[2] end
  read = read + #entries
  redis.call('HSET', KEYS[2], 'read', read)
end
if lost > 0 then redis.call('HINCRBY', KEYS[2], 'lost', lost) end
return {lost, entries}
