"""The built-in stream consumer: a consumer-group worker on `data_stream`.

Every Redis without RedisGears (Redis 8, Valkey, the embedded default) relies
on it. Run it as its own process with `python consumer.py`; the embedded
default runs it in a thread of the service.
"""

import logging
import os
import signal
import socket
import sys
import threading
import time

import redis

import constants
import keys
import lua_scripts
import setup
from config import ConfigError, load_settings
from redis_conn import UNAVAILABLE_ERRORS, connect

logger = logging.getLogger(__name__)

CLAIM_INTERVAL_SEC = 5.0  # how often to look for entries of dead consumers


class StreamNotOwned(Exception):
    """A RedisGears consumer owns the stream, so this worker must not count it."""


def default_consumer_name():
    return f"{socket.gethostname()}-{os.getpid()}"


class StreamWorker:
    """Reads checked events in the consumer group and applies them in batches.

    Args:
        client: a redis-py client with decode_responses=True whose socket
            timeout exceeds `settings.consumer_block_ms`.
        settings: the `config.Settings` of the service.
        name: consumer name in the group; unique per process.
    """

    def __init__(self, client, settings, name=None):
        self.client = client
        self.settings = settings
        self.name = name or default_consumer_name()
        self.script = lua_scripts.register(client, "consume_events.lua")
        self.series_keys = [keys.event_series(fraud_type) for fraud_type in constants.FRAUD_TYPES]
        self.next_claim = 0.0
        self.next_sweep = 0.0
        self.applied_total = 0

    def apply(self, entries):
        """Apply and acknowledge `entries`, a list of (id, fields); return the script's counts."""
        if not entries:
            return [0, 0, 0]
        window_keys = []
        args = [
            constants.CONSUMER_GROUP,
            self.settings.window_ms,
            self.settings.timeseries_retention_ms,
            constants.SERIES_LABEL_SERVICE,
        ]
        for entry_id, fields in entries:
            window_keys.append(keys.device_window(fields.get("device_id", "")))
            args += [entry_id, fields.get("ts", ""), fields.get("fraud_type", "")]
        script_keys = [self.settings.stream_key, *self.series_keys, keys.stream_owner(),
                       *window_keys]
        try:
            applied, acknowledged_before, unknown = self.script(keys=script_keys, args=args)
        except redis.ResponseError as error:
            if str(error).startswith("NOTOWNER"):
                raise StreamNotOwned(str(error)) from error
            raise
        if unknown:
            logger.warning(
                "Consumer %s acknowledged %d entries without a valid ts or fraud_type "
                "among %s..%s; they are not counted",
                self.name, unknown, entries[0][0], entries[-1][0],
            )
        self.applied_total += applied
        return [applied, acknowledged_before, unknown]

    def claim_stale(self):
        """Take over entries that other consumers left pending, and apply them."""
        start = "0-0"
        claimed = 0
        while True:
            start, entries, deleted = self.client.xautoclaim(
                self.settings.stream_key,
                constants.CONSUMER_GROUP,
                self.name,
                min_idle_time=self.settings.consumer_claim_idle_ms,
                start_id=start,
                count=self.settings.consumer_batch_size,
            )
            if deleted:
                logger.error(
                    "Consumer %s: %d pending entries were trimmed from %s before anyone "
                    "applied them; they are lost (first id %s). Raise STREAM_MAXLEN.",
                    self.name, len(deleted), self.settings.stream_key, deleted[0],
                )
            entries = [(entry_id, fields) for entry_id, fields in entries if fields]
            if entries:
                claimed += self.apply(entries)[0]
            if start == "0-0":
                break
        if claimed:
            logger.info("Consumer %s reclaimed and applied %d pending entries", self.name, claimed)
        return claimed

    def sweep_expired_entries(self):
        """Remove expired blacklist and allowlist entries; one worker at a time does it.

        Expired entries stop matching at once; the sweep frees their records.
        Returns the number of entries removed.
        """
        from ip_lists.store import IpList

        lists = [IpList(self.client, name, self.settings) for name in constants.IP_LISTS]
        due = [ip_list for ip_list in lists if ip_list.has_expired_entries()]
        if not due:
            return 0
        if not self.client.set(keys.sweep_lock(), self.name, nx=True,
                               px=constants.LIST_SWEEP_LOCK_MS):
            return 0
        try:
            return sum(ip_list.sweep() for ip_list in due)
        finally:
            self.client.delete(keys.sweep_lock())

    def heartbeat(self):
        now_ms = int(time.time() * 1000)
        self.client.zadd(keys.consumer_heartbeats(), {self.name: now_ms})

    def process_once(self, block_ms=None):
        """Run one round: heartbeat, reclaim and sweep if due, read and apply one batch.

        Returns the number of entries applied, reclaimed ones included.
        """
        self.heartbeat()
        claimed = 0
        if time.monotonic() >= self.next_claim:
            claimed = self.claim_stale()
            self.next_claim = time.monotonic() + CLAIM_INTERVAL_SEC

        if time.monotonic() >= self.next_sweep:
            self.next_sweep = time.monotonic() + constants.LIST_SWEEP_INTERVAL_SEC
            try:
                self.sweep_expired_entries()
            except redis.ResponseError as error:
                logger.error("Consumer %s could not sweep expired list entries: %s",
                             self.name, error)

        block_ms = self.settings.consumer_block_ms if block_ms is None else block_ms
        reply = self.client.xreadgroup(
            constants.CONSUMER_GROUP,
            self.name,
            {self.settings.stream_key: ">"},
            count=self.settings.consumer_batch_size,
            block=block_ms or None,
        )
        entries = reply[0][1] if reply else []
        return claimed + self.apply(entries)[0]

    def drain(self, max_rounds=1000):
        """Apply everything readable now; return the number of entries applied."""
        self.next_claim = 0.0
        applied = 0
        for _ in range(max_rounds):
            count = self.process_once(block_ms=0)
            applied += count
            if count == 0:
                break
        return applied

    def run(self, stop_event):
        """Consume until `stop_event` is set, retrying with capped backoff while Redis is down."""
        logger.info(
            "Consumer %s started on stream %s, group %s",
            self.name, self.settings.stream_key, constants.CONSUMER_GROUP,
        )
        delay = 0.1
        while not stop_event.is_set():
            try:
                self.process_once()
                delay = 0.1
            except UNAVAILABLE_ERRORS as error:
                logger.warning(
                    "Consumer %s cannot reach Redis (%s); retrying in %.1f s",
                    self.name, error, delay,
                )
                stop_event.wait(delay)
                delay = min(delay * 2, constants.CONSUMER_MAX_BACKOFF_SEC)
            except StreamNotOwned as error:
                logger.warning("Consumer %s stops: %s", self.name, error)
                break
            except redis.ResponseError as error:
                if "NOGROUP" not in str(error) and not str(error).startswith("NOOWNER"):
                    raise
                logger.warning(
                    "Consumer %s: the group %s or the owner key of %s is missing (%s); "
                    "claiming the stream again",
                    self.name, constants.CONSUMER_GROUP, self.settings.stream_key, error,
                )
                try:
                    setup.prepare_worker(self.client, self.settings)
                except setup.SetupError as setup_error:
                    logger.error("Consumer %s stops: %s", self.name, setup_error)
                    break
        self.leave_group()
        logger.info("Consumer %s stopped after applying %d entries", self.name, self.applied_total)

    def leave_group(self):
        """Remove this consumer from the group when it has no pending entries."""
        try:
            pending = self.client.xpending_range(
                self.settings.stream_key, constants.CONSUMER_GROUP,
                min="-", max="+", count=1, consumername=self.name,
            )
            if not pending:
                self.client.xgroup_delconsumer(
                    self.settings.stream_key, constants.CONSUMER_GROUP, self.name
                )
            self.client.zrem(keys.consumer_heartbeats(), self.name)
        except redis.RedisError as error:
            logger.warning("Consumer %s could not leave group: %s", self.name, error)


class ConsumerThread(threading.Thread):
    """Runs a `StreamWorker` in a daemon thread of the service."""

    def __init__(self, client, settings):
        super().__init__(name="stream-consumer", daemon=True)
        self.worker = StreamWorker(client, settings)
        self.stop_event = threading.Event()

    def run(self):
        try:
            self.worker.run(self.stop_event)
        except Exception:
            logger.exception("Consumer %s stopped on an unexpected error", self.worker.name)

    def stop(self, timeout=5.0):
        self.stop_event.set()
        self.join(timeout)


def main():
    """Run the worker in the foreground until SIGINT or SIGTERM."""
    from logs import configure_logging

    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"Invalid configuration: {error}", file=sys.stderr)
        return 2
    configure_logging(settings)
    if settings.embedded:
        print("Set REDIS_URL or REDIS_HOST: the embedded default runs its consumer "
              "inside the service.", file=sys.stderr)
        return 2

    client = connect(settings.redis_url, settings.redis_timeout_sec,
                     block_sec=settings.consumer_block_ms / 1000)
    stop_event = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_event.set())

    while not stop_event.is_set():
        try:
            kind = setup.register_stream_consumer(client, settings)
            break
        except UNAVAILABLE_ERRORS as error:
            logger.warning("Cannot reach Redis for set-up (%s); retrying in 1 s", error)
            stop_event.wait(1.0)
        except setup.SetupError as error:
            print(f"Set-up failed: {error}", file=sys.stderr)
            return 1
    else:
        return 0
    if kind != setup.WORKER:
        logger.info("A %s consumer is registered on the server; the worker is not needed", kind)
        return 0
    StreamWorker(client, settings).run(stop_event)
    return 0


if __name__ == "__main__":
    sys.exit(main())
