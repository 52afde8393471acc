"""Redis clients of the service.

Nothing here connects at import time: the app factory and the consumer call
`connect()` with their settings.
"""

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# Errors that mean Redis is unreachable or did not reply in time. Callers
# turn them into 503 responses (the API) or retries (the consumer).
UNAVAILABLE_ERRORS = (redis.ConnectionError, redis.TimeoutError)


def connect(url, timeout_sec, block_sec=0.0, max_connections=None):
    """Return a client for `url` that fails fast instead of retrying.

    redis-py retries on connection errors by default. A retried check script
    could run twice after a timeout, so the request path gets no retries:
    a failed call surfaces at once and the caller responds 503.

    Args:
        url: redis://, rediss:// or unix:// URL with optional password.
        timeout_sec: connect timeout and socket timeout.
        block_sec: extra socket timeout for blocking reads (XREADGROUP BLOCK).
        max_connections: cap of the connection pool.
    """
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections or 64,
        timeout=timeout_sec,
        socket_timeout=timeout_sec + block_sec,
        socket_connect_timeout=timeout_sec,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        decode_responses=True,
    )
    return redis.Redis(connection_pool=pool)
