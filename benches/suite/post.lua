-- wrk script: POST one encoded image file as the body, and print a JSON summary at the end.
--   BODY_FILE=img.jpg CONTENT_TYPE=image/jpeg ACCEPT=application/x-npz \
--     wrk -t1 -c32 -d10s -s benches/suite/post.lua http://127.0.0.1:8080/v1/models/m/classify
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "image/jpeg"
if os.getenv("ACCEPT") and os.getenv("ACCEPT") ~= "" then
  wrk.headers["Accept"] = os.getenv("ACCEPT")
end

-- wrk hands every response body to Lua only when a `response` function exists, which costs the
-- client a copy of each answer (175 KB per activations npz answer on the default model) on the
-- cores it shares with the server. So statuses are counted from wrk's own summary (errors.status:
-- answers >= 400), and 429s separately only where asked (COUNT_429=1, the overload run, whose
-- answers are small).
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  s429 = 0
end
if os.getenv("COUNT_429") == "1" then
  function response(status, headers, body)
    if status == 429 then s429 = s429 + 1 end
  end
end

function done(summary, latency, requests)
  local n429 = 0
  for _, t in ipairs(threads) do
    n429 = n429 + (t:get("s429") or 0)
  end
  local e = summary.errors
  local n2 = e.status
  local secs = summary.duration / 1e6
  local ok = summary.requests - n2
  io.write(string.format(
    'WRKJSON {"requests":%d,"ok":%d,"non2xx":%d,"status429":%d,"seconds":%.3f,"rps":%.3f,' ..
    '"ok_rps":%.3f,"bytes":%d,"err_connect":%d,"err_read":%d,"err_write":%d,"err_timeout":%d,' ..
    '"lat_mean_ms":%.3f,"lat_p50_ms":%.3f,"lat_p90_ms":%.3f,"lat_p99_ms":%.3f,"lat_max_ms":%.3f}\n',
    summary.requests, ok, n2, n429, secs, summary.requests / secs, ok / secs, summary.bytes,
    e.connect, e.read, e.write, e.timeout,
    latency.mean / 1e3, latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3))
end
