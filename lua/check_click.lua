-- Check one click and record it, atomically.
--
-- KEYS[1]  Cuckoo filter of blacklisted addresses (ip_cf)
-- KEYS[2]  device window: sorted set, member = stream entry id, score = ts
-- KEYS[3]  stream of checked events (data_stream)
-- ARGV[1]  deadline in ms since the epoch, or 0; past it the script writes
--          nothing and fails with EXPIRED, because the caller has already
--          answered 503
-- ARGV[2]  client IP address
-- ARGV[3]  click ts in ms since the epoch
-- ARGV[4]  click-spam window in ms
-- ARGV[5]  click-spam threshold: clicks already in the window
-- ARGV[6]  approximate maximum length of the stream
-- ARGV[7…] field, value pairs of the event, written to the stream entry
--
-- Writes: one stream entry, one member of the device window, the window's
-- expiry. Returns {entry id, fraud_type, clicks in window before this click}.

local deadline = tonumber(ARGV[1])
if deadline > 0 then
    local now = redis.call('TIME')
    local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    if now_ms > deadline then
        return redis.error_reply('EXPIRED the request timed out before Redis ran it')
    end
end

local ip = ARGV[2]
local ts = tonumber(ARGV[3])
local window_ms = tonumber(ARGV[4])
local threshold = tonumber(ARGV[5])

local fraud_type = 'clean'
if redis.call('CF.EXISTS', KEYS[1], ip) == 1 then
    fraud_type = 'ip_blacklist'
end

-- Clicks in [ts - window, ts], counted before this click is added.
local clicks = redis.call('ZCOUNT', KEYS[2], ts - window_ms, ts)
if fraud_type == 'clean' and clicks >= threshold then
    fraud_type = 'click_spam'
end

local status = 'fraud'
if fraud_type == 'clean' then
    status = 'clean'
end

local entry = {}
for i = 7, #ARGV do
    entry[#entry + 1] = ARGV[i]
end
for _, value in ipairs({'status', status, 'fraud_type', fraud_type,
                        'clicks_in_window', clicks, 'threshold', threshold,
                        'window_ms', window_ms}) do
    entry[#entry + 1] = value
end
local entry_id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', unpack(entry))

-- Record the click, then drop members that fell out of the window of the
-- newest click, so a window never holds more than one window of clicks.
redis.call('ZADD', KEYS[2], ts, entry_id)
local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')[2]
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf',
           string.format('(%d', tonumber(newest) - window_ms))
redis.call('PEXPIRE', KEYS[2], window_ms)

return {entry_id, fraud_type, clicks}
