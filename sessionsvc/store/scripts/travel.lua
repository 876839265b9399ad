-- Impossible travel, shared by open and activity (the loader puts this file
-- where a script includes it, after events). The script defines, before the
-- include: KN, the KEYS index of the user's sign-in history, whose field 'g'
-- keeps the user's last located activity (one field: bounded), NOW and
-- EVENTS_TTL.
--
-- travel(place, limits): place is this request's location as JSON text
-- ('{"la":..,"lo":..,"cc":..,"cy":..}', coordinates always there) or '';
-- limits is 'max km/h,min km'. Remembers this place and time as the last
-- located activity, and returns the detail of a session.anomaly (JSON text)
-- when the user could not have come here from the last one in time: farther
-- than min km, faster than max km/h; else nil.
local function place_json(p)
  return '{"country":' .. json_str(p.cc) .. ',"city":' .. json_str(p.cy) .. '}'
end
local function travel(place, limits)
  if place == '' then return nil end
  local here = cjson.decode(place)
  local last = redis.call('HGET', KEYS[KN], 'g')
  redis.call('HSET', KEYS[KN], 'g', NOW .. '|' .. place)
  redis.call('EXPIRE', KEYS[KN], EVENTS_TTL)
  if not last then return nil end
  local bar = string.find(last, '|', 1, true)
  if not bar then return nil end
  local since = tonumber(string.sub(last, 1, bar - 1))
  local there = cjson.decode(string.sub(last, bar + 1))
  local max_kmh, min_km = string.match(limits, '^(%d+),(%d+)$')
  -- Great-circle distance (haversine, mean Earth radius).
  local r = math.pi / 180
  local dlat, dlon = (here.la - there.la) * r, (here.lo - there.lo) * r
  local a = math.sin(dlat / 2) ^ 2
    + math.cos(there.la * r) * math.cos(here.la * r) * math.sin(dlon / 2) ^ 2
  local km = 2 * 6371.0088 * math.asin(math.min(1, math.sqrt(a)))
  if km <= tonumber(min_km) then return nil end
  -- Within the same second counts as one second: a finite, huge speed.
  local kmh = km / (math.max(tonumber(NOW) - since, 1) / 3600)
  if kmh <= tonumber(max_kmh) then return nil end
  return string.format('{"kind":"impossible_travel","distance_km":%d,"speed_kmh":%d,'
    .. '"location":{"from":%s,"to":%s}}', math.floor(km + 0.5), math.floor(kmh + 0.5),
    place_json(there), place_json(here))
end
