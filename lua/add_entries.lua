-- Add a chunk of entries to one part of a list (its addresses or its ranges),
-- or update the entries already there. Each entry's record, index member and
-- expiry are written together, so no entry is ever half written.
--
-- KEYS[1]   hash of records: entry -> "expires_at|in_filter|added_at|reason"
-- KEYS[2]   sorted set of index members "<key form>:<entry>", all scores 0
-- KEYS[3]   sorted set of expiring entries, score = expires_at in ms
-- KEYS[4]   Cuckoo filter ip_cf
-- KEYS[5]   count of records that own an item of ip_cf (a string)
-- ARGV[1]   1 to put new entries into the Cuckoo filter (blacklist addresses), else 0
-- ARGV[2]   expires_at in ms since the epoch, or 0 for never
-- ARGV[3]   reason, may be empty
-- ARGV[4..] per entry: entry text, index member
--
-- A new entry gets one CF.ADD, so a record with in_filter = 1 owns exactly one
-- item of the filter, and removing the entry deletes that item and no other.
-- An entry already present keeps its record. Its expiry becomes the later of
-- the two (0, never, is later than any time), and a non-empty reason replaces
-- the old one.
--
-- Returns per entry: 'added', 'updated', or 'filter_full' when a new entry
-- was added to the list but CF.ADD failed because the filter is full.

local records, index, expiries, filter, filter_items = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local use_filter = ARGV[1] == '1'
local expires_at = tonumber(ARGV[2])
local reason = ARGV[3]

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)

local function later(a, b)
    if a == 0 or b == 0 then
        return 0
    end
    return math.max(a, b)
end

-- Returns 1 when the entry now owns a filter item, 0 when the filter is full.
local function add_to_filter(entry)
    local reply = redis.pcall('CF.ADD', filter, entry)
    if type(reply) == 'table' and reply.err then
        local message = tostring(reply.err)
        if string.find(string.lower(message), 'full', 1, true) then
            return 0
        end
        error(message)
    end
    redis.call('INCR', filter_items)
    return 1
end

local results = {}
for i = 4, #ARGV, 2 do
    local entry, member = ARGV[i], ARGV[i + 1]
    local status = 'updated'
    local entry_expires_at, in_filter, added_at, entry_reason = expires_at, 0, now_ms, reason

    local old = redis.call('HGET', records, entry)
    if old then
        local old_expires_at, old_in_filter, old_added_at, old_reason =
            string.match(old, '^(%d+)|(%d)|(%d+)|(.*)$')
        entry_expires_at = later(tonumber(old_expires_at), expires_at)
        in_filter = tonumber(old_in_filter)
        added_at = tonumber(old_added_at)
        if reason == '' then
            entry_reason = old_reason
        end
    else
        status = 'added'
    end

    -- An entry that found the filter full before gets another try.
    if use_filter and in_filter == 0 then
        in_filter = add_to_filter(entry)
        if in_filter == 0 and status == 'added' then
            status = 'filter_full'
        end
    end

    redis.call('HSET', records, entry,
               string.format('%.0f|%d|%.0f|%s', entry_expires_at, in_filter, added_at, entry_reason))
    redis.call('ZADD', index, 0, member)
    if entry_expires_at == 0 then
        redis.call('ZREM', expiries, entry)
    else
        redis.call('ZADD', expiries, entry_expires_at, entry)
    end
    results[#results + 1] = status
end
return results
