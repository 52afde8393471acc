#!js api_version=1.0 name=fraud_detector
// RedisGears 2 (Triggers and Functions) consumer of the checked-event stream.
//
// gears_registration.py loads this library with
// `TFUNCTION LOAD [REPLACE] CONFIG <json> <code>`. The JSON configuration
// carries the service's settings (stream key, click-spam window, series
// retention) and key names, and a version hash of this code and the
// settings, so that a changed library or setting replaces the loaded one.
//
// Reads, per entry of the stream:
// - the fields device_id, ts and fraud_type;
// - the owner key, which names the only consumer kind allowed to count;
// - the id of the last entry a gear applied;
// - the hand-over id, up to which the built-in worker's consumer group owned
//   the entries before this gear took over.
// Writes, per applied entry, the same effects as lua/consume_events.lua:
// the device window (member = entry id, score = ts), one sample of value 1
// in the event series of the entry's fraud_type, and the applied id.
// Writes, per entry it cannot apply: the failure count and one entry of the
// capped error stream, and a line in the Redis log.
// Returns nothing. An error is rethrown after it is recorded, so that
// `TFUNCTION LIST vvv` also shows it as the trigger's last_error.
//
// The trigger is synchronous, so each entry is applied while Redis runs no
// other command. Redis does not roll back the writes of a failed callback,
// so every check runs before the first write.

const KIND = 'gears2';

function requireSetting(name, type) {
    const value = redis.config[name];
    if (typeof value !== type) {
        throw new Error(`invalid library configuration: ${name} must be a ${type}, got ${JSON.stringify(value)}`);
    }
    return value;
}

const STREAM_KEY = requireSetting('stream_key', 'string');
const GROUP = requireSetting('group', 'string');
const WINDOW_MS = requireSetting('window_ms', 'number');
const RETENTION_MS = requireSetting('retention_ms', 'number');
const SERVICE_LABEL = requireSetting('service_label', 'string');
const FRAUD_TYPES = new Set(requireSetting('fraud_types', 'object'));
if (FRAUD_TYPES.size === 0) {
    throw new Error('invalid library configuration: fraud_types must list the fraud types');
}
const TRIGGER_NAME = requireSetting('trigger_name', 'string');
const DEVICE_PREFIX = requireSetting('device_prefix', 'string');
const SERIES_PREFIX = requireSetting('series_prefix', 'string');
const OWNER_KEY = requireSetting('owner_key', 'string');
const APPLIED_KEY = requireSetting('applied_key', 'string');
const HANDOVER_KEY = requireSetting('handover_key', 'string');
const FAILURES_KEY = requireSetting('failures_key', 'string');
const ERRORS_KEY = requireSetting('errors_key', 'string');
const ERRORS_MAXLEN = requireSetting('errors_maxlen', 'number');
const VERSION = requireSetting('version', 'string');

// Stream entry ids are "<ms>-<seq>", and either part can exceed 2^53, so
// the parts are compared as BigInt.
function compareIds(left, right) {
    const [leftMs, leftSeq] = left.split('-').map(BigInt);
    const [rightMs, rightSeq] = right.split('-').map(BigInt);
    if (leftMs !== rightMs) {
        return leftMs < rightMs ? -1 : 1;
    }
    if (leftSeq !== rightSeq) {
        return leftSeq < rightSeq ? -1 : 1;
    }
    return 0;
}

// Return the entry's fields by name. The record is a list of [name, value]
// pairs because a stream entry may repeat a name. The last value wins, as in
// the worker, which reads the entry into a dictionary.
function fieldsOf(record) {
    const fields = {};
    for (const [name, value] of record) {
        fields[name] = value;
    }
    return fields;
}

// Return ts as a number, or null. Like `tonumber` in the worker's script,
// this accepts any finite number, but not an empty or missing field.
function parseTs(text) {
    if (typeof text !== 'string' || text.trim() === '') {
        return null;
    }
    const ts = Number(text);
    return Number.isFinite(ts) ? ts : null;
}

function nowMs(client) {
    const [seconds, micros] = client.call('TIME');
    return BigInt(seconds) * 1000n + BigInt(micros) / 1000n;
}

// Return true when this consumer kind may count the stream. The gear claims
// an owner key that is missing because the keys were flushed. Otherwise only
// `setup.py` sets the key, when it registers a consumer.
function ownsStream(client) {
    const owner = client.call('GET', OWNER_KEY);
    if (owner === null) {
        client.call('SET', OWNER_KEY, KIND);
        return true;
    }
    return owner == KIND;
}

// Return true when the built-in worker applied the entry before this gear
// took over. Such an entry was delivered to the worker's group, so its id is
// not after the hand-over id, and it is no longer pending there. XACK
// returns 1 for an entry that the worker read but never applied, and removes
// it from the pending list.
function appliedByWorker(client, entryId) {
    const handoverId = client.call('GET', HANDOVER_KEY) || '0-0';
    const wasPending = client.call('XACK', STREAM_KEY, GROUP, entryId) === 1n;
    return !wasPending && compareIds(entryId, handoverId) <= 0;
}

function addToWindow(client, deviceId, ts, entryId) {
    const window = DEVICE_PREFIX + deviceId;
    client.call('ZADD', window, String(ts), entryId);

    // RESP3 reply: [[member, score]].
    const newest = client.call('ZRANGE', window, '-1', '-1', 'WITHSCORES')[0];
    const newestScore = Number(Array.isArray(newest) ? newest[1] : newest);
    client.call('ZREMRANGEBYSCORE', window, '-inf', '(' + String(Math.trunc(newestScore - WINDOW_MS)));

    // A late consumer never extends the expiry that the check path set.
    if (client.call('PTTL', window) < 0n) {
        client.call('PEXPIRE', window, String(WINDOW_MS));
    }
}

function countEvent(client, fraudType) {
    const series = SERIES_PREFIX + fraudType;
    if (client.call('EXISTS', series) === 0n) {
        client.call('TS.CREATE', series, 'RETENTION', String(RETENTION_MS),
                    'DUPLICATE_POLICY', 'LAST',
                    'LABELS', 'service', SERVICE_LABEL, 'fraud_type', fraudType);
    }

    // A write in the millisecond of the newest sample adds to that sample
    // (duplicate policy LAST), so timestamps never run ahead of the clock.
    let sampleTs = nowMs(client);
    let value = 1;
    const last = client.call('TS.GET', series);
    if (last && last.length > 0 && BigInt(last[0]) >= sampleTs) {
        sampleTs = BigInt(last[0]);
        value = Number(last[1]) + 1;
    }
    client.call('TS.ADD', series, String(sampleTs), String(value));
}

function recordFailure(client, entryId, message) {
    redis.log(`fraud_detector ${VERSION}: entry ${entryId} of ${STREAM_KEY} not counted: ${message}`);
    try {
        client.call('INCR', FAILURES_KEY);
        client.call('XADD', ERRORS_KEY, 'MAXLEN', '~', String(ERRORS_MAXLEN), '*',
                    'entry_id', entryId, 'error', message, 'consumer', KIND);
    } catch (error) {
        redis.log(`fraud_detector ${VERSION}: cannot record the failure of entry ${entryId}: ${String(error)}`);
    }
}

function applyEntry(client, entryId, record) {
    if (!ownsStream(client)) {
        return;
    }
    const appliedId = client.call('GET', APPLIED_KEY);
    if (appliedId !== null && compareIds(entryId, appliedId) <= 0) {
        return;  // delivered again, for example after the library was loaded anew
    }
    if (appliedByWorker(client, entryId)) {
        client.call('SET', APPLIED_KEY, entryId);
        return;
    }

    const fields = fieldsOf(record);
    const ts = parseTs(fields.ts);
    const fraudType = fields.fraud_type;
    const deviceId = fields.device_id === undefined ? '' : fields.device_id;
    if (ts === null || !FRAUD_TYPES.has(fraudType) || deviceId === null) {
        client.call('SET', APPLIED_KEY, entryId);
        recordFailure(client, entryId,
                      `invalid entry: ts ${JSON.stringify(fields.ts)}, fraud_type ${JSON.stringify(fraudType)}`);
        return;
    }

    addToWindow(client, deviceId, ts, entryId);
    countEvent(client, fraudType);
    client.call('SET', APPLIED_KEY, entryId);
}

redis.registerStreamTrigger(
    TRIGGER_NAME,
    STREAM_KEY,
    function (client, data) {
        // The trigger fires for every key that starts with STREAM_KEY.
        if (data.stream_name !== STREAM_KEY) {
            return;
        }
        const entryId = `${data.id[0]}-${data.id[1]}`;
        try {
            applyEntry(client, entryId, data.record);
        } catch (error) {
            recordFailure(client, entryId, String(error));
            throw error;
        }
    },
    {
        description: `fraud-detector stream consumer ${VERSION}`,
        window: 1,
        isStreamTrimmed: false,  // the check script trims the stream with XADD MAXLEN ~
    }
);
