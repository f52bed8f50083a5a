-- wrk script: POST one fixed JSON body (read from the file named by WRK_BODY_FILE) on every request,
-- and print one machine-readable line at the end: "WRK_RESULT {json}" with latencies in microseconds.
--
-- The request is built once here, at load time, and no request()/response() hook is defined, so wrk keeps
-- its static fast path: the load generator does the same small amount of work for every contender.

local path = os.getenv("WRK_BODY_FILE")
if path == nil then
  error("set WRK_BODY_FILE to the file holding the JSON request body")
end
local fh = assert(io.open(path, "rb"))
wrk.body = fh:read("*a")
fh:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
-- An API key (WRK_API_KEY), for a contender that checks them.
local key = os.getenv("WRK_API_KEY")
if key ~= nil and key ~= "" then
  wrk.headers["X-API-Key"] = key
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
