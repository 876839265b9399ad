-- wrk, after report.lua: the requests of python -m bench.dpop, each built at init.
-- With a file of DPoP proofs (wrk ... -- <file>, one proof a line), each request
-- carries the next one, each proof sent once. Out of proofs, a request goes
-- without one (a bound token then gets 401) and counts as exhausted: never a replay.
-- Without a file (the Bearer runs), every request is the same, no DPoP header.
-- Both sides do the same per request (an index, a table read), so the load
-- generator spends no more on one than the other beyond the bytes it sends.
-- done() prints a second JSON line: requests built (wrk builds the first only to
-- check the script), and those that had no proof left.
local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

init = function(args)
  plain = wrk.format("GET", wrk.path, wrk.headers)
  signed, used, exhausted = {}, 0, 0
  if args[1] then
    for proof in io.lines(args[1]) do
      wrk.headers["DPoP"] = proof
      signed[#signed + 1] = wrk.format("GET", wrk.path, wrk.headers)
    end
    wrk.headers["DPoP"] = nil
  end
  count = args[1] and #signed or -1
end

request = function()
  used = used + 1
  if count < 0 then
    return plain
  end
  if used > count then
    exhausted = exhausted + 1
    return plain
  end
  return signed[used]
end

local report = done
done = function(summary, latency, requests)
  report(summary, latency, requests)
  local built, short = 0, 0
  for _, thread in ipairs(threads) do
    built = built + thread:get("used")
    short = short + thread:get("exhausted")
  end
  io.write(string.format('{"built":%d,"exhausted":%d}\n', built, short))
end
