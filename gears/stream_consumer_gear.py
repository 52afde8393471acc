# RedisGears 1.x consumer of the checked-event stream.
#
# gears_registration.py sends this file with RG.PYEXECUTE, after a first line
# that sets GEAR_CONFIG_JSON: the service's settings (stream key, click-spam
# window, series retention), the key names and a version hash, which is also
# the end of the registration's description. The gear uses only what the
# RedisGears 1.x runtime provides (GB, execute, atomic, log) and the Python
# standard library, so RG.PYEXECUTE needs no REQUIREMENTS and the Redis host
# needs no internet access.
#
# Reads, per entry of the stream:
# - the fields device_id, ts and fraud_type;
# - the owner key, which names the only consumer kind allowed to count;
# - the id of the last entry a gear applied;
# - the hand-over id, up to which the built-in worker's consumer group owned
#   the entries before this gear took over.
# Writes, per applied entry, the same effects as lua/consume_events.lua: the
# device window (member = entry id, score = ts), one sample of value 1 in the
# event series of the entry's fraud_type, and the applied id.
# Writes, per entry it cannot apply: the failure count, one entry of the
# capped error stream and a warning in the Redis log. The error is raised
# again, so that RG.DUMPREGISTRATIONS counts it in numFailures and lastError.
#
# The StreamReader runs one execution at a time per stream, and each entry
# is applied inside `atomic()`, so no other command runs in between. Redis
# does not roll back the writes of a failed block, so every check runs
# before the first write. The code stays within Python 3.7, the interpreter
# of RedisGears 1.x.

import json

CONFIG = json.loads(GEAR_CONFIG_JSON)  # noqa: F821 (set by the registration)

KIND = 'gears1'
STREAM_KEY = CONFIG['stream_key']
GROUP = CONFIG['group']
WINDOW_MS = int(CONFIG['window_ms'])
RETENTION_MS = int(CONFIG['retention_ms'])
SERVICE_LABEL = CONFIG['service_label']
FRAUD_TYPES = frozenset(CONFIG['fraud_types'])
DEVICE_PREFIX = CONFIG['device_prefix']
SERIES_PREFIX = CONFIG['series_prefix']
OWNER_KEY = CONFIG['owner_key']
APPLIED_KEY = CONFIG['applied_key']
HANDOVER_KEY = CONFIG['handover_key']
FAILURES_KEY = CONFIG['failures_key']
ERRORS_KEY = CONFIG['errors_key']
ERRORS_MAXLEN = int(CONFIG['errors_maxlen'])
VERSION = CONFIG['version']


def parse_id(entry_id):
    milliseconds, sequence = entry_id.split('-')
    return int(milliseconds), int(sequence)


def parse_ts(text):
    """Return ts as a number, or None for a missing, empty or non-finite value."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        ts = float(text)
    except ValueError:
        return None
    if ts != ts or ts in (float('inf'), float('-inf')):
        return None
    return ts


def score_text(ts):
    """Return the ZADD score of ts as the worker's script writes it."""
    return str(int(ts)) if ts == int(ts) else repr(ts)


def owns_stream():
    """Return True when this consumer kind may count, after claiming an owner key that was flushed."""
    owner = execute('GET', OWNER_KEY)  # noqa: F821 (RedisGears runtime)
    if owner is None:
        execute('SET', OWNER_KEY, KIND)  # noqa: F821
        return True
    return owner == KIND


def applied_by_worker(entry_id):
    """Return True when the built-in worker applied the entry before the hand-over.

    Such an entry was delivered to the worker's group, so its id is not after
    the hand-over id, and it is no longer pending there. XACK returns 1 for
    an entry that the worker read but never applied, and removes it from the
    pending list.
    """
    handover_id = execute('GET', HANDOVER_KEY) or '0-0'  # noqa: F821
    was_pending = execute('XACK', STREAM_KEY, GROUP, entry_id) == 1  # noqa: F821
    return not was_pending and parse_id(entry_id) <= parse_id(handover_id)


def add_to_window(device_id, ts, entry_id):
    window = DEVICE_PREFIX + device_id
    execute('ZADD', window, score_text(ts), entry_id)  # noqa: F821

    # RESP2 reply: [member, score].
    newest = execute('ZRANGE', window, '-1', '-1', 'WITHSCORES')  # noqa: F821
    bound = int(float(newest[1]) - WINDOW_MS)
    execute('ZREMRANGEBYSCORE', window, '-inf', '(%d' % bound)  # noqa: F821

    # A late consumer never extends the expiry that the check path set.
    if int(execute('PTTL', window)) < 0:  # noqa: F821
        execute('PEXPIRE', window, str(WINDOW_MS))  # noqa: F821


def count_event(fraud_type):
    series = SERIES_PREFIX + fraud_type
    if int(execute('EXISTS', series)) == 0:  # noqa: F821
        execute('TS.CREATE', series, 'RETENTION', str(RETENTION_MS),  # noqa: F821
                'DUPLICATE_POLICY', 'LAST',
                'LABELS', 'service', SERVICE_LABEL, 'fraud_type', fraud_type)

    # A write in the millisecond of the newest sample adds to that sample
    # (duplicate policy LAST), so timestamps never run ahead of the clock.
    seconds, micros = execute('TIME')  # noqa: F821
    sample_ts = int(seconds) * 1000 + int(micros) // 1000
    value = 1
    last = execute('TS.GET', series)  # noqa: F821
    if last and int(last[0]) >= sample_ts:
        sample_ts = int(last[0])
        value = int(float(last[1])) + 1
    execute('TS.ADD', series, str(sample_ts), str(value))  # noqa: F821


def record_failure(entry_id, message):
    log('fraud_detector %s: entry %s of %s not counted: %s'  # noqa: F821
        % (VERSION, entry_id, STREAM_KEY, message), level='warning')
    try:
        with atomic():  # noqa: F821
            execute('INCR', FAILURES_KEY)  # noqa: F821
            execute('XADD', ERRORS_KEY, 'MAXLEN', '~', str(ERRORS_MAXLEN), '*',  # noqa: F821
                    'entry_id', entry_id, 'error', message, 'consumer', KIND)
    except Exception as error:
        log('fraud_detector %s: cannot record the failure of entry %s: %s'  # noqa: F821
            % (VERSION, entry_id, error), level='warning')


def apply_entry(entry_id, fields):
    """Apply one entry, and return an error message for an invalid entry or None."""
    if not owns_stream():
        return None
    applied_id = execute('GET', APPLIED_KEY)  # noqa: F821
    if applied_id is not None and parse_id(entry_id) <= parse_id(applied_id):
        return None  # delivered again, for example after a restart of Redis
    if applied_by_worker(entry_id):
        execute('SET', APPLIED_KEY, entry_id)  # noqa: F821
        return None

    ts = parse_ts(fields.get('ts'))
    fraud_type = fields.get('fraud_type')
    if ts is None or fraud_type not in FRAUD_TYPES:
        execute('SET', APPLIED_KEY, entry_id)  # noqa: F821
        return 'invalid entry: ts %s, fraud_type %s' % (json.dumps(fields.get('ts')), json.dumps(fraud_type))

    add_to_window(fields.get('device_id', ''), ts, entry_id)
    count_event(fraud_type)
    execute('SET', APPLIED_KEY, entry_id)  # noqa: F821
    return None


def consume(record):
    entry_id = record['id']
    try:
        with atomic():  # noqa: F821
            invalid = apply_entry(entry_id, record['value'])
    except Exception as error:
        record_failure(entry_id, str(error))
        raise
    if invalid:
        record_failure(entry_id, invalid)


GB('StreamReader', desc=CONFIG['description']).foreach(consume).register(  # noqa: F821
    prefix=STREAM_KEY,  # without a trailing '*', the StreamReader matches this key only
    batch=1,
    duration=0,
    mode='async_local',
    onFailedPolicy='continue',
    trimStream=False,  # the check script trims the stream with XADD MAXLEN ~
)
