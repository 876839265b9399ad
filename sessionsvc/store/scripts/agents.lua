-- A user's interned user agents (the hash P:{T}:ag): each one's JSON text
-- under its digest, in pieces of at most AGENT_PIECE bytes (fields
-- <digest>, <digest>1, <digest>2...; a digest is AGENT_REF_LEN characters),
-- so that the hash stays a compact listpack, as session hashes do (see
-- codec.py). The JSON text is ASCII, so cutting it at any byte is safe.
local AGENT_PIECE, AGENT_REF_LEN = 64, 16
-- The JSON text interned under `ref` in hash `key`, or false.
local function agent_text(key, ref)
  local parts, i = {}, 0
  while true do
    local piece = redis.call('HGET', key, i == 0 and ref or ref .. i)
    if not piece then break end
    parts[#parts+1] = piece
    i = i + 1
  end
  return #parts > 0 and table.concat(parts) or false
end
-- Store `text` under `ref` in hash `key`.
local function store_agent(key, ref, text)
  local fields, i = {}, 0
  for at = 1, math.max(#text, 1), AGENT_PIECE do
    fields[#fields+1] = i == 0 and ref or ref .. i
    fields[#fields+1] = string.sub(text, at, at + AGENT_PIECE - 1)
    i = i + 1
  end
  redis.call('HSET', key, unpack(fields))
end
-- The digest an event (its JSON) refers to its user agent by, or nil. Only
-- the key can match: JSON escapes every '"' inside a string.
local function event_agent(e)
  return string.match(e, '"uh":"([%w_%-]+)"')
end
-- The JSON texts of the digests `refs` in hash `key`, each once, as
-- {digest, text, ...} (a digest not in the hash left out).
local function agents_of(key, refs)
  local out, seen = {}, {}
  for _, ref in ipairs(refs) do
    if not seen[ref] then
      seen[ref] = true
      local text = agent_text(key, ref)
      if text then out[#out+1] = ref; out[#out+1] = text end
    end
  end
  return out
end
-- How many user agents hash `key` holds.
local function agents_count(key)
  local n = 0
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if #field == AGENT_REF_LEN then n = n + 1 end
  end
  return n
end
