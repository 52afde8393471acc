-- Remove a chunk of entries from one part of a list (its addresses or its
-- ranges). Each entry's record, index member, expiry and filter item go
-- together.
--
-- KEYS[1]   hash of records: entry -> "expires_at|in_filter|added_at|reason"
-- KEYS[2]   sorted set of index members "<key form>:<entry>"
-- KEYS[3]   sorted set of expiring entries, score = expires_at in ms
-- KEYS[4]   Cuckoo filter ip_cf
-- KEYS[5]   count of records that own an item of ip_cf (a string)
-- ARGV[1]   0 to remove the entries, or a time in ms to remove only those
--           that expired at or before it (the sweep)
-- ARGV[2..] per entry: entry text, index member
--
-- CF.DEL runs only for a record with in_filter = 1, that is one whose CF.ADD
-- succeeded: deleting an item that was never added can delete the item of
-- another address with the same fingerprint.
--
-- Returns per entry: 'removed', 'not_found', or 'kept' when a sweep finds the
-- entry not expired (it was added again with a later expiry meanwhile).

local records, index, expiries, filter, filter_items = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local expired_before = tonumber(ARGV[1])

local results = {}
for i = 2, #ARGV, 2 do
    local entry, member = ARGV[i], ARGV[i + 1]
    local status = 'removed'
    local record = redis.call('HGET', records, entry)
    if not record then
        status = 'not_found'
    else
        local expires_at, in_filter = string.match(record, '^(%d+)|(%d)|')
        expires_at = tonumber(expires_at)
        if expired_before > 0 and (expires_at == 0 or expires_at > expired_before) then
            status = 'kept'
        else
            if in_filter == '1' then
                -- The reply is 0 when someone deleted the item with a raw
                -- CF.DEL. Either way the record owns no item from now on.
                redis.pcall('CF.DEL', filter, entry)
                redis.call('DECR', filter_items)
            end
            redis.call('HDEL', records, entry)
            redis.call('ZREM', index, member)
            redis.call('ZREM', expiries, entry)
        end
    end
    results[#results + 1] = status
end
return results
