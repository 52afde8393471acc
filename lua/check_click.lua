-- Check clicks and record them, atomically: one click for POST /, up to the
-- batch limit for POST /batch. Clicks are checked in order, so a later click
-- of a device counts the earlier ones of the same call.
--
-- KEYS[1]     Cuckoo filter of blacklisted addresses (ip_cf)
-- KEYS[2]     stream of checked events (data_stream)
-- KEYS[3]     blacklist addresses: hash, address -> record
-- KEYS[4]     blacklist segments: sorted set of "first:last:expires_at"
-- KEYS[5]     allowlist addresses: hash, address -> record
-- KEYS[6]     allowlist segments
-- KEYS[7]     count of blacklist records that own an item of ip_cf
-- KEYS[n+i]   device window of click i, where n = ARGV[7]: sorted set,
--             member = stream entry id, score = ts
-- ARGV[1]     number of ARGV values before the first click, so that new
--             settings can be appended without moving the clicks
-- ARGV[2]     deadline in ms since the epoch, or 0; past it the script writes
--             nothing and fails with EXPIRED, because the caller has already
--             responded 503
-- ARGV[3]     click-spam window in ms
-- ARGV[4]     click-spam threshold: clicks already in the window
-- ARGV[5]     approximate maximum length of the stream
-- ARGV[6]     1 when CF.INFO's "Number of items inserted" is the current item
--             count (RedisBloom), 0 when deletions are counted apart (fakeredis)
-- ARGV[7]     number of KEYS before the first device window
-- ARGV[h+1..] per click, where h = ARGV[1]: ip, key form of the ip, ts in ms
--             or '' to stamp the click with this server's time, n, then n
--             field, value pairs of the stream entry
--
-- A record is "expires_at|in_filter|added_at|reason" (expires_at 0: never).
-- The key form is "4" and 8 hex digits for IPv4, "6" and 32 for IPv6.
--
-- Writes per click: one stream entry, one member of the device window and
-- the window's expiry.
-- Returns per click, flattened: entry id, fraud_type, clicks in the window
-- before this click, the list match ('allowlist', 'blacklist_address',
-- 'blacklist_range', 'blacklist_filter' or ''), and the click's ts.
--
-- Stamping ts here, with the time of the script run, keeps the timestamps of
-- one device in the order the clicks are checked. A ts taken before the call
-- could let two concurrent clicks each miss the other in their window.

local header_size = tonumber(ARGV[1])
local deadline = tonumber(ARGV[2])
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if deadline > 0 and now_ms > deadline then
    return redis.error_reply('EXPIRED the request timed out before Redis ran it')
end

local filter = KEYS[1]
local stream = KEYS[2]

-- A missing filter means Redis lost the service's keys (a restart without
-- persistence, FLUSHALL): fail before any write so the caller sets up again.
if redis.call('EXISTS', filter) == 0 then
    return redis.error_reply('NOFILTER the Cuckoo filter is missing; run the set-up again')
end
local blacklist_addresses, blacklist_segments = KEYS[3], KEYS[4]
local allowlist_addresses, allowlist_segments = KEYS[5], KEYS[6]
local filter_items = KEYS[7]
local window_ms = tonumber(ARGV[3])
local threshold = tonumber(ARGV[4])
local maxlen = ARGV[5]
local inserted_count_is_current = ARGV[6] == '1'
local fixed_keys = tonumber(ARGV[7])

local function expired(expires_at)
    expires_at = tonumber(expires_at)
    return expires_at ~= 0 and expires_at <= now_ms
end

-- Returns whether the address has a live record, and whether the record owns
-- an item of ip_cf (an expired record keeps its item until the sweep).
local function address_record(records, ip)
    local record = redis.call('HGET', records, ip)
    if not record then
        return false, false
    end
    local expires_at, in_filter = string.match(record, '^(%d+)|(%d)|')
    return not expired(expires_at), in_filter == '1'
end

-- The segment that can contain the address is the one with the greatest first
-- address not above it. The exclusive bound "(<key>;" sorts after every member
-- that starts with <key>, because ';' follows ':'.
local function in_segments(segments, ip_key)
    local found = redis.call('ZRANGE', segments, '(' .. ip_key .. ';', '-', 'BYLEX', 'REV', 'LIMIT', 0, 1)[1]
    if not found then
        return false
    end
    local last, expires_at = string.match(found, '^[^:]+:([^:]+):(%d+)$')
    return ip_key <= last and not expired(expires_at)
end

-- Returns the number of items of ip_cf that no record owns, such as raw
-- CF.ADDNX additions. CF.INFO runs at most once per call, and only when a
-- filter hit needs it.
local unmanaged = nil
local function unmanaged_items()
    if unmanaged == nil then
        local info = redis.call('CF.INFO', filter)
        local inserted, deleted = 0, 0
        for i = 1, #info, 2 do
            -- RedisBloom sends the names as status replies, which reach Lua
            -- as tables with an `ok` field.
            local name = info[i]
            if type(name) == 'table' then
                name = name.ok
            end
            if name == 'Number of items inserted' then
                inserted = tonumber(info[i + 1])
            elseif name == 'Number of items deleted' then
                deleted = tonumber(info[i + 1])
            end
        end
        local items = inserted
        if not inserted_count_is_current then
            items = inserted - deleted
        end
        unmanaged = items - tonumber(redis.call('GET', filter_items) or '0')
    end
    return unmanaged
end

-- Returns the list match of an address, or '' when no list matches.
local function list_match(ip, ip_key)
    local allowed = address_record(allowlist_addresses, ip)
    if allowed or in_segments(allowlist_segments, ip_key) then
        return 'allowlist'
    end

    local listed, owns_item = address_record(blacklist_addresses, ip)
    if listed then
        return 'blacklist_address'
    end
    if in_segments(blacklist_segments, ip_key) then
        return 'blacklist_range'
    end

    -- A Cuckoo filter can report an address that was never added, when an
    -- item with the same fingerprint sits in one of its buckets. A hit that
    -- the address's own record does not explain is trusted only while the
    -- filter contains unmanaged items. Without them, records account for every
    -- item, so the hit is a false positive.
    local hits = redis.call('CF.COUNT', filter, ip)
    if owns_item then
        hits = hits - 1
    end
    if hits > 0 and unmanaged_items() > 0 then
        return 'blacklist_filter'
    end
    return ''
end

local function check_one(window, ip, ip_key, ts, fields)
    local fraud_type = 'clean'
    local match = list_match(ip, ip_key)
    if match ~= '' and match ~= 'allowlist' then
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
    for _, value in ipairs({'ts', ts, 'status', status, 'fraud_type', fraud_type,
                            'clicks_in_window', clicks, 'threshold', threshold,
                            'window_ms', window_ms}) do
        fields[#fields + 1] = value
    end
    if match ~= '' then
        fields[#fields + 1] = 'ip_match'
        fields[#fields + 1] = match
    end
    local entry_id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(fields))

    -- Record the click, then drop members that fell out of the window of the
    -- newest click, so a window never contains more than one window of clicks.
    redis.call('ZADD', window, ts, entry_id)
    local newest = redis.call('ZRANGE', window, -1, -1, 'WITHSCORES')[2]
    redis.call('ZREMRANGEBYSCORE', window, '-inf',
               string.format('(%d', tonumber(newest) - window_ms))
    redis.call('PEXPIRE', window, window_ms)

    return entry_id, fraud_type, clicks, match
end

local results = {}
local position = header_size + 1
local click = 0
while position <= #ARGV do
    click = click + 1
    local ip = ARGV[position]
    local ip_key = ARGV[position + 1]
    local ts = tonumber(ARGV[position + 2]) or now_ms
    local field_count = tonumber(ARGV[position + 3])
    local fields = {}
    for i = 1, field_count * 2 do
        fields[i] = ARGV[position + 3 + i]
    end
    position = position + 4 + field_count * 2

    local entry_id, fraud_type, clicks, match = check_one(KEYS[fixed_keys + click], ip, ip_key, ts, fields)
    results[#results + 1] = entry_id
    results[#results + 1] = fraud_type
    results[#results + 1] = clicks
    results[#results + 1] = match
    results[#results + 1] = ts
end
return results
