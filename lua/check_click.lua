-- Check clicks and record them, atomically: one click for POST /, up to the
-- batch limit for POST /batch. Clicks are checked in order, so a later click
-- of a device sees the earlier ones of the same call.
--
-- KEYS[1]     Cuckoo filter of blacklisted addresses (ip_cf)
-- KEYS[2]     stream of checked events (data_stream)
-- KEYS[2+i]   device window of click i: sorted set, member = stream entry
--             id, score = ts
-- ARGV[1]     deadline in ms since the epoch, or 0; past it the script writes
--             nothing and fails with EXPIRED, because the caller has already
--             answered 503
-- ARGV[2]     click-spam window in ms
-- ARGV[3]     click-spam threshold: clicks already in the window
-- ARGV[4]     approximate maximum length of the stream
-- ARGV[5..]   per click: ip, ts in ms, n, then n field, value pairs of the
--             stream entry
--
-- Writes per click: one stream entry, one member of the device window and
-- the window's expiry.
-- Returns per click, flattened: entry id, fraud_type, clicks in the window
-- before this click.

local deadline = tonumber(ARGV[1])
if deadline > 0 then
    local now = redis.call('TIME')
    local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    if now_ms > deadline then
        return redis.error_reply('EXPIRED the request timed out before Redis ran it')
    end
end

local filter = KEYS[1]
local stream = KEYS[2]
local window_ms = tonumber(ARGV[2])
local threshold = tonumber(ARGV[3])
local maxlen = ARGV[4]

local function check_one(window, ip, ts, fields)
    local fraud_type = 'clean'
    if redis.call('CF.EXISTS', filter, ip) == 1 then
        fraud_type = 'ip_blacklist'
    end

    -- Clicks in [ts - window, ts], counted before this click is added.
    local clicks = redis.call('ZCOUNT', window, ts - window_ms, ts)
    if fraud_type == 'clean' and clicks >= threshold then
        fraud_type = 'click_spam'
    end

    local status = 'fraud'
    if fraud_type == 'clean' then
        status = 'clean'
    end
    for _, value in ipairs({'status', status, 'fraud_type', fraud_type,
                            'clicks_in_window', clicks, 'threshold', threshold,
                            'window_ms', window_ms}) do
        fields[#fields + 1] = value
    end
    local entry_id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(fields))

    -- Record the click, then drop members that fell out of the window of the
    -- newest click, so a window never holds more than one window of clicks.
    redis.call('ZADD', window, ts, entry_id)
    local newest = redis.call('ZRANGE', window, -1, -1, 'WITHSCORES')[2]
    redis.call('ZREMRANGEBYSCORE', window, '-inf',
               string.format('(%d', tonumber(newest) - window_ms))
    redis.call('PEXPIRE', window, window_ms)

    return entry_id, fraud_type, clicks
end

local results = {}
local position = 5
local click = 0
while position <= #ARGV do
    click = click + 1
    local ip = ARGV[position]
    local ts = tonumber(ARGV[position + 1])
    local field_count = tonumber(ARGV[position + 2])
    local fields = {}
    for i = 1, field_count * 2 do
        fields[i] = ARGV[position + 2 + i]
    end
    position = position + 3 + field_count * 2

    local entry_id, fraud_type, clicks = check_one(KEYS[2 + click], ip, ts, fields)
    results[#results + 1] = entry_id
    results[#results + 1] = fraud_type
    results[#results + 1] = clicks
end
return results
