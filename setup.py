"""Preparation of Redis and registration of the stream consumer.

This is not a packaging script. `python setup.py` creates the keys the
service needs (the Cuckoo filter, the event series and the consumer group) and
registers the stream consumer. The app runs the same steps at start-up. Every
step is idempotent, so restarts and several workers starting at once are safe.
`python setup.py --switch-to-worker` unregisters a RedisGears consumer and
hands the stream to the built-in worker.
"""

import argparse
import logging
import sys

import redis

import constants
import gears_registration
import keys
from config import ConfigError, load_settings

logger = logging.getLogger(__name__)

WORKER = constants.WORKER_CONSUMER
GEARS2 = constants.GEARS2_CONSUMER
GEARS1 = constants.GEARS1_CONSUMER


class SetupError(RuntimeError):
    """Redis cannot serve the service as configured."""


def ensure_filter(client, settings):
    """Create the Cuckoo filter `ip_cf` unless it exists, and return whether it did."""
    if client.exists(constants.FILTER_KEY):
        try:
            info = client.cf().info(constants.FILTER_KEY)
        except redis.ResponseError as error:
            raise SetupError(f"{constants.FILTER_KEY} exists but is not a Cuckoo filter: {error}") from error
        # FILTER_BUCKET_SIZE and FILTER_EXPANSION apply only when the filter is created.
        if (info.bucketSize, info.expansionRate) != (settings.filter_bucket_size, settings.filter_expansion):
            logger.warning(
                "Cuckoo filter %s exists with bucket size %s and expansion %s, so "
                "FILTER_BUCKET_SIZE=%d and FILTER_EXPANSION=%d are not in effect",
                constants.FILTER_KEY, info.bucketSize, info.expansionRate,
                settings.filter_bucket_size, settings.filter_expansion,
            )
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
    """Create the event series of every fraud type unless they exist.

    A consumer that writes in the millisecond of the newest sample overwrites
    it with the sum, so every series needs the duplicate policy LAST. A series
    created without it is altered.
    """
    for fraud_type in constants.FRAUD_TYPES:
        key = keys.event_series(fraud_type)
        if client.exists(key):
            if client.ts().info(key).duplicate_policy != "last":
                client.ts().alter(key, duplicate_policy="last")
                logger.info("Set the duplicate policy of time series %s to LAST", key)
            continue
        try:
            client.ts().create(
                key,
                retention_msecs=settings.timeseries_retention_ms,
                duplicate_policy="last",
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
    """Return the kind of stream consumer to run: "gears2", "gears1" or "worker".

    The server's `MODULE LIST` decides under STREAM_CONSUMER=auto: redisgears_2
    (RedisGears 2) gets the JavaScript library, rg (RedisGears 1.x) the Python
    gear, and a server with neither the built-in worker. STREAM_CONSUMER=gears
    and STREAM_CONSUMER=worker force a kind.
    """
    if settings.stream_consumer == WORKER:
        return WORKER
    kind = gears_registration.available_gears(client)
    if kind == GEARS2 and settings.stream_consumer == "auto" and too_long_for_new_library(
        client, settings
    ):
        return WORKER
    if kind is not None:
        return kind
    if settings.stream_consumer == "gears":
        raise SetupError(
            "STREAM_CONSUMER=gears, but the Redis server has no RedisGears module "
            "(MODULE LIST shows neither redisgears_2 nor rg): load RedisGears, or use "
            "STREAM_CONSUMER=auto or worker"
        )
    return WORKER


def too_long_for_new_library(client, settings):
    """Return True when loading the RedisGears 2 library would block Redis too long.

    A newly loaded library's trigger reads the stream from its first entry
    inside Redis, which serves no clicks meanwhile. A library that is already
    registered keeps its position, so only a first load is refused.
    """
    if gears_registration.gear_registered(client, GEARS2):
        return False
    length = client.xlen(settings.stream_key)
    if length <= constants.GEARS2_MAX_STREAM_ON_LOAD:
        return False
    logger.warning(
        "Keeping the built-in worker: loading the RedisGears 2 consumer on %s with %d "
        "entries (more than %d) would block Redis while its trigger reads them all. "
        "Set STREAM_CONSUMER=gears to load it anyway.",
        settings.stream_key, length, constants.GEARS2_MAX_STREAM_ON_LOAD,
    )
    return True


def prepare_worker(client, settings):
    """Make the built-in worker the owner of the stream and create its consumer group.

    Raises:
        SetupError: a RedisGears consumer of this service is registered.
    """
    try:
        gears_registration.claim_stream_for_worker(client, settings)
    except gears_registration.RegistrationError as error:
        raise SetupError(str(error)) from error
    ensure_consumer_group(client, settings)


def register_stream_consumer(client, settings):
    """Prepare every key of the service and return the active consumer kind."""
    ensure_filter(client, settings)
    ensure_event_series(client, settings)
    check_data_types(client)
    kind = choose_consumer(client, settings)
    if kind == WORKER:
        prepare_worker(client, settings)
    else:
        try:
            gears_registration.register_gear(client, settings, kind)
        except gears_registration.RegistrationError as error:
            raise SetupError(str(error)) from error
    logger.info("Stream consumer of %s: %s", settings.stream_key, kind)
    return kind


def switch_to_worker(client, settings):
    """Unregister the RedisGears consumer and hand the stream to the built-in worker."""
    try:
        gears_registration.switch_to_worker(client, settings)
    except gears_registration.RegistrationError as error:
        raise SetupError(str(error)) from error
    ensure_consumer_group(client, settings)
    logger.info("Stream consumer of %s: %s", settings.stream_key, WORKER)
    return WORKER


def main(argv=None):
    """Run the set-up once against the configured Redis and print the consumer kind."""
    from logs import configure_logging
    from redis_conn import connect

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--switch-to-worker", action="store_true",
        help="unregister the RedisGears consumer and hand the stream to the built-in worker; "
             "then run every process with STREAM_CONSUMER=worker",
    )
    arguments = parser.parse_args(argv)
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
        if arguments.switch_to_worker:
            kind = switch_to_worker(client, settings)
        else:
            kind = register_stream_consumer(client, settings)
    except (SetupError, redis.RedisError) as error:
        print(f"Set-up failed: {error}", file=sys.stderr)
        return 1
    print(kind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
