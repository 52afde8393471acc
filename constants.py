"""Names and defaults of the service, each with its unit.

Other modules import these names; nothing here reads the environment.
"""

# Key names fixed by the original RedisGears + RedisBloom design.
FILTER_KEY = "ip_cf"
STREAM_KEY = "data_stream"

# Every other key of the service starts with this prefix. The hash tag puts
# the keys in the Redis Cluster slot of `ip_cf`, which the check script needs.
KEY_PREFIX = "fraud:{ip_cf}:"

CONSUMER_GROUP = "fraud-consumers"
SERIES_LABEL_SERVICE = "fraud-detector"

CLEAN = "clean"
IP_BLACKLIST = "ip_blacklist"
CLICK_SPAM = "click_spam"
FRAUD_TYPES = (CLEAN, IP_BLACKLIST, CLICK_SPAM)

# Click-spam check.
CLICK_SPAM_THRESHOLD = 2  # clicks already seen in the window
CLICK_SPAM_WINDOW_IN_SEC = 10  # seconds

# Input limits.
MAX_CONTENT_LENGTH = 16 * 1024  # bytes of one request body
MAX_ID_LENGTH = 256  # characters of device_id and transaction_id
MAX_EXTRA_FIELDS = 20  # extra scalar fields carried to the stream
MAX_FIELD_NAME_LENGTH = 64  # characters
MAX_FIELD_VALUE_LENGTH = 256  # characters, after conversion to a string
MAX_BATCH_CLICKS = 1000  # clicks in one POST /batch
MAX_BATCH_CONTENT_LENGTH = 2 * 1024 * 1024  # bytes of one POST /batch body

# Stream.
STREAM_MAXLEN = 1_000_000  # entries, approximate (XADD MAXLEN ~)

# Time series.
TIMESERIES_RETENTION_MS = 7 * 24 * 3600 * 1000  # 7 days

# Cuckoo filter created at start-up when `ip_cf` is missing.
FILTER_CAPACITY = 1_000_000  # items
FILTER_BUCKET_SIZE = 2  # items per bucket
FILTER_EXPANSION = 1  # size factor of each added sub-filter

# Redis client.
REDIS_TIMEOUT_SEC = 1.0  # connect and socket timeout on the request path

# Built-in stream consumer.
CONSUMER_BATCH_SIZE = 500  # entries per XREADGROUP
CONSUMER_BLOCK_MS = 1000  # XREADGROUP BLOCK
CONSUMER_CLAIM_IDLE_MS = 30_000  # pending entries older than this are reclaimed
CONSUMER_MAX_BACKOFF_SEC = 1.0  # cap of the retry delay when Redis is down
LIST_SWEEP_INTERVAL_SEC = 60.0  # how often a worker sweeps expired list entries
LIST_SWEEP_LOCK_MS = 60_000  # expiry of the sweep lock if its holder dies

# Kinds of stream consumer. The owner key of the stream contains one of them,
# and only the consumer of that kind counts events.
WORKER_CONSUMER = "worker"  # the built-in consumer-group worker (consumer.py)
GEARS2_CONSUMER = "gears2"  # RedisGears 2 JavaScript library (gears/stream_consumer.js)
GEARS1_CONSUMER = "gears1"  # RedisGears 1.x Python gear (gears/stream_consumer_gear.py)
HANDOVER_OWNER = "handover"  # owner value while the stream passes from a gear to the worker

# RedisGears consumers.
GEARS_LIBRARY_NAME = "fraud_detector"  # RedisGears 2 library (TFUNCTION LIST)
GEARS_TRIGGER_NAME = "stream_consumer"  # its stream trigger
GEAR_DESCRIPTION_PREFIX = "fraud-detector stream consumer"  # RedisGears 1.x registration desc
GEARS1_READER_GROUP = "__gears_consumer_group__"  # group that the RedisGears 1.x StreamReader reads with
GEARS_ERRORS_MAXLEN = 1000  # entries of the gear error stream, approximate (XADD MAXLEN ~)
REGISTRATION_LOCK_TTL_MS = 30_000  # expiry of the registration lock if its holder dies
REGISTRATION_LOCK_WAIT_SEC = 35.0  # how long a starting process waits for that lock
# Maximum stream length on which STREAM_CONSUMER=auto loads the RedisGears 2 library
# anew. Its trigger reads the whole stream while Redis serves nothing else,
# about 50 us per entry on the 2-core benchmark machine (a measurement,
# docs/performance.md).
GEARS2_MAX_STREAM_ON_LOAD = 10_000  # entries

# Development server.
PORT = 5000

# Blacklist and allowlist of addresses and CIDR ranges.
BLACKLIST = "blacklist"
ALLOWLIST = "allowlist"
IP_LISTS = (BLACKLIST, ALLOWLIST)
LIST_CHUNK_SIZE = 1000  # entries per script call or pipeline of an import
MAX_REASON_LENGTH = 200  # characters of the reason stored with an entry
MAX_IMPORT_LENGTH = 32 * 1024 * 1024  # bytes of a blocklist uploaded to the admin API
ADMIN_LIST_LIMIT = 100  # entries per page of the admin API, by default
MAX_ADMIN_LIST_LIMIT = 1000  # entries per page, at most
ADMIN_TOKEN_MIN_LENGTH = 16  # characters of ADMIN_TOKEN
