"""Preparation of Redis and registration of the stream consumer.

This is not a packaging script. `python setup.py` creates the keys the
service needs (the Cuckoo filter, the event series and the consumer group) and
registers the stream consumer; the app runs the same steps at start-up. Every
step is idempotent, so restarts and several workers starting at once are safe.
"""

import logging
import sys

import redis

import constants
import keys
from config import ConfigError, load_settings

logger = logging.getLogger(__name__)

WORKER = "worker"


class SetupError(RuntimeError):
    """Redis cannot serve the service as configured."""


def ensure_filter(client, settings):
    """Create the Cuckoo filter `ip_cf` unless it exists."""
    if client.exists(constants.FILTER_KEY):
        return False
    try:
        client.cf().reserve(
            constants.FILTER_KEY,
            settings.filter_capacity,
            bucket_size=settings.filter_bucket_size,
            expansion=settings.filter_expansion,
        )
    except redis.ResponseError as error:
        if "exists" in str(error).lower():  # created by another process meanwhile
            return False
        raise SetupError(f"cannot create the Cuckoo filter {constants.FILTER_KEY}: {error}") from error
    logger.info(
        "Created Cuckoo filter %s (capacity %d, bucket size %d, expansion %d)",
        constants.FILTER_KEY,
        settings.filter_capacity,
        settings.filter_bucket_size,
        settings.filter_expansion,
    )
    return True


def ensure_event_series(client, settings):
    """Create the event series of every fraud type unless they exist."""
    for fraud_type in constants.FRAUD_TYPES:
        key = keys.event_series(fraud_type)
        if client.exists(key):
            continue
        try:
            client.ts().create(
                key,
                retention_msecs=settings.timeseries_retention_ms,
                labels={"service": constants.SERIES_LABEL_SERVICE, "fraud_type": fraud_type},
            )
        except redis.ResponseError as error:
            if "already exists" not in str(error).lower():
                raise SetupError(f"cannot create the time series {key}: {error}") from error
        else:
            logger.info("Created time series %s", key)


def ensure_consumer_group(client, settings):
    """Create the consumer group of the built-in worker, and the stream, if missing.

    The group starts at the first entry, so events written before the group
    existed are counted too.
    """
    try:
        client.xgroup_create(settings.stream_key, constants.CONSUMER_GROUP, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise
        return False
    logger.info(
        "Created consumer group %s on stream %s", constants.CONSUMER_GROUP, settings.stream_key
    )
    return True


def check_data_types(client):
    """Raise `SetupError` unless the server has Cuckoo filters and time series."""
    try:
        client.cf().info(constants.FILTER_KEY)
        client.ts().info(keys.event_series(constants.CLEAN))
    except redis.ResponseError as error:
        raise SetupError(
            "Redis lacks the Cuckoo filter or time-series data types (RedisBloom and "
            f"RedisTimeSeries, built into Redis 8): {error}"
        ) from error


def choose_consumer(client, settings):
    """Return the kind of stream consumer to run: only the built-in worker so far."""
    if settings.stream_consumer == "gears":
        raise SetupError(
            "STREAM_CONSUMER=gears, but no RedisGears consumer is available: "
            "use STREAM_CONSUMER=auto or worker"
        )
    return WORKER


def register_stream_consumer(client, settings):
    """Prepare every key of the service and return the active consumer kind."""
    ensure_filter(client, settings)
    ensure_event_series(client, settings)
    check_data_types(client)
    kind = choose_consumer(client, settings)
    if kind == WORKER:
        ensure_consumer_group(client, settings)
    logger.info("Stream consumer of %s: %s", settings.stream_key, kind)
    return kind


def main():
    """Run the set-up once against the configured Redis and print the consumer kind."""
    from logs import configure_logging
    from redis_conn import connect

    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"Invalid configuration: {error}", file=sys.stderr)
        return 2
    configure_logging(settings)
    if settings.embedded:
        print("Set REDIS_URL or REDIS_HOST: the embedded server is set up by the app itself.",
              file=sys.stderr)
        return 2
    client = connect(settings.redis_url, settings.redis_timeout_sec)
    try:
        kind = register_stream_consumer(client, settings)
    except (SetupError, redis.RedisError) as error:
        print(f"Set-up failed: {error}", file=sys.stderr)
        return 1
    print(kind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
