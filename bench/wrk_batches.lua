-- wrk script: POST /batch with a JSON array of new clicks on every request.
--
-- Arguments (after `--` on the wrk command line):
--   1  run prefix, so that two runs never share a device or transaction id
--   2  clicks per batch
--
-- Every click has a new device id. done() prints the same JSON line as
-- wrk_clicks.lua.

local thread_count = 0

function setup(thread)
    thread:set("thread_index", thread_count)
    thread_count = thread_count + 1
end

local prefix = "run"
local batch_size = 100
local counter = 0

function init(args)
    prefix = (args[1] or "run") .. "-t" .. tostring(thread_index or 0)
    batch_size = tonumber(args[2] or "100")
end

local headers = {["Content-Type"] = "application/json"}

function request()
    local clicks = {}
    for i = 1, batch_size do
        counter = counter + 1
        clicks[i] = string.format(
            '{"device_id":"%s-d%d","ip":"198.51.100.%d","transaction_id":"%s-%d","campaign":"bench"}',
            prefix, counter, counter % 256, prefix, counter)
    end
    return wrk.format("POST", "/batch", headers, "[" .. table.concat(clicks, ",") .. "]")
end

function done(summary, latency, requests)
    local errors = summary.errors
    io.write(string.format(
        '{"requests":%d,"duration_us":%d,"errors":%d,"status_errors":%d,"p50_us":%d,"p99_us":%d}\n',
        summary.requests, summary.duration,
        errors.connect + errors.read + errors.write + errors.timeout, errors.status,
        latency:percentile(50), latency:percentile(99)))
end
