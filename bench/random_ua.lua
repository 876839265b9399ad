-- wrk: every request with a user agent never seen before (a Chrome on
-- Windows of a random build: the same browser and OS family, so no
-- anomaly), and report.lua's summary line.
dofile("bench/report.lua")
request = function()
  wrk.headers["User-Agent"] = string.format(
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      .. "Chrome/120.0.%d.%d Safari/537.36", math.random(0, 9999), math.random(0, 99999999))
  return wrk.format()
end
