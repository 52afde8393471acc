-- Apply a batch of stream entries and acknowledge them, atomically.
--
-- KEYS[1]       stream of checked events (data_stream)
-- KEYS[2..4]    event series of clean, ip_blacklist and click_spam
-- KEYS[5]       owner key: the consumer kind that may count the stream
-- KEYS[6..]     device window of each entry, in the order of the entries
-- ARGV[1]       consumer group
-- ARGV[2]       click-spam window in ms
-- ARGV[3]       retention of a new event series in ms
-- ARGV[4]       value of the `service` label of a new event series
-- ARGV[5..]     id, ts, fraud_type of each entry
--
-- Each entry is acknowledged first and applied only when XACK returns 1, so
-- an entry that another consumer already applied and acknowledged is never
-- counted twice, and a crash leaves either both or neither.
-- Writes: device windows (member = entry id, score = ts) and one sample per
-- fraud type with the number of entries counted.
-- Returns {entries applied, entries already acknowledged, entries with an
-- unknown fraud_type (acknowledged, not counted)}.
-- Fails with NOTOWNER, writing nothing, when a RedisGears consumer owns the
-- stream, and with NOOWNER when the owner key is missing: the worker then
-- claims the stream again through setup.py, which checks for a gear first.

local owner = redis.call('GET', KEYS[5])
if owner == false then
    return redis.error_reply('NOOWNER no consumer kind owns the stream')
elseif owner ~= 'worker' then
    return redis.error_reply('NOTOWNER the stream belongs to the ' .. owner .. ' consumer')
end

local stream = KEYS[1]
local group = ARGV[1]
local window_ms = tonumber(ARGV[2])
local series = {clean = KEYS[2], ip_blacklist = KEYS[3], click_spam = KEYS[4]}
local counts = {clean = 0, ip_blacklist = 0, click_spam = 0}
local applied, acknowledged_before, unknown = 0, 0, 0

local entry_count = (#ARGV - 4) / 3
for i = 1, entry_count do
    local id = ARGV[2 + i * 3]
    local ts = tonumber(ARGV[3 + i * 3])
    local fraud_type = ARGV[4 + i * 3]
    local window = KEYS[5 + i]

    if redis.call('XACK', stream, group, id) == 0 then
        acknowledged_before = acknowledged_before + 1
    elseif counts[fraud_type] == nil or ts == nil then
        unknown = unknown + 1
    else
        redis.call('ZADD', window, ts, id)
        local newest = redis.call('ZRANGE', window, -1, -1, 'WITHSCORES')[2]
        redis.call('ZREMRANGEBYSCORE', window, '-inf',
                   string.format('(%d', tonumber(newest) - window_ms))
        if redis.call('PTTL', window) < 0 then
            redis.call('PEXPIRE', window, window_ms)
        end
        counts[fraud_type] = counts[fraud_type] + 1
        applied = applied + 1
    end
end

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for fraud_type, count in pairs(counts) do
    if count > 0 then
        local key = series[fraud_type]
        if redis.call('EXISTS', key) == 0 then
            redis.call('TS.CREATE', key, 'RETENTION', ARGV[3], 'DUPLICATE_POLICY', 'LAST',
                       'LABELS', 'service', ARGV[4], 'fraud_type', fraud_type)
        end
        -- A write in the millisecond of the newest sample adds to that sample
        -- (duplicate policy LAST), so timestamps never run ahead of the clock.
        local sample_ts, value = now_ms, count
        -- TS.GET of an empty series returns an empty array (false under fakeredis).
        local last = redis.call('TS.GET', key)
        if type(last) == 'table' and last[1] ~= nil and tonumber(last[1]) >= now_ms then
            -- RedisTimeSeries sends the value as a status reply, which reaches
            -- Lua as a table with an `ok` field.
            local last_value = last[2]
            if type(last_value) == 'table' then
                last_value = last_value.ok
            end
            sample_ts = tonumber(last[1])
            value = tonumber(last_value) + count
        end
        redis.call('TS.ADD', key, sample_ts, value)
    end
end

return {applied, acknowledged_before, unknown}
