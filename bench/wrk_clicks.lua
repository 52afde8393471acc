-- wrk script: POST / with a different click body on every request.
--
-- Arguments (after `--` on the wrk command line):
--   1  run prefix, so that two runs never share a device or transaction id
--   2  optional file of device ids, one per line. Without it every request
--      gets a new device id. With it the ids are sent in file order and the
--      file repeats, so devices come back as often as they do in the file.
--
-- done() prints one JSON line that bench/harness.py reads: requests,
-- duration_us, errors (connect, read, write, timeout), status_errors (HTTP
-- status 400 or higher) and the p50 and p99 latency in microseconds.

local thread_count = 0

function setup(thread)
    thread:set("thread_index", thread_count)
    thread_count = thread_count + 1
end

local prefix = "run"
local devices = nil
local counter = 0

function init(args)
    prefix = (args[1] or "run") .. "-t" .. tostring(thread_index or 0)
    if args[2] and args[2] ~= "" then
        devices = {}
        for line in io.lines(args[2]) do
            devices[#devices + 1] = line
        end
        -- Threads start at different places of the file.
        counter = math.floor(#devices * (thread_index or 0) / 4)
    end
end

local headers = {["Content-Type"] = "application/json"}

function request()
    counter = counter + 1
    local device
    if devices then
        device = devices[(counter % #devices) + 1]
    else
        device = prefix .. "-d" .. counter
    end
    local body = string.format(
        '{"device_id":"%s","ip":"198.51.100.%d","transaction_id":"%s-%d","campaign":"bench"}',
        device, counter % 256, prefix, counter)
    return wrk.format("POST", "/", headers, body)
end

function done(summary, latency, requests)
    local errors = summary.errors
    io.write(string.format(
        '{"requests":%d,"duration_us":%d,"errors":%d,"status_errors":%d,"p50_us":%d,"p99_us":%d}\n',
        summary.requests, summary.duration,
        errors.connect + errors.read + errors.write + errors.timeout, errors.status,
        latency:percentile(50), latency:percentile(99)))
end
