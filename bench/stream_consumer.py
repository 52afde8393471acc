"""Benchmark 4: the stream consumers, draining a backlog and keeping up with a steady rate.

    python -m bench.stream_consumer [--quick]

For each consumer kind, on its own Redis Stack server:

1. Drain: the check script (`fraud_checks.ClickChecker.check_many`) fills
   the stream with a backlog while no consumer runs. Then the consumer
   starts, and the benchmark times how fast it counts the backlog.
2. Lag: a producer thread checks clicks at a steady rate while the consumer
   runs. A sampler reads every few milliseconds up to which entry id the
   consumer has counted. The lag of an entry is the time from its id's
   timestamp (Redis time at XADD) to the first sample that shows it counted.

The built-in worker runs as `python consumer.py`. Its counted position comes
from the consumer group: every entry at or before last-delivered-id and
below the smallest pending id is acknowledged, and the worker acknowledges
an entry in the same script that counts it. The RedisGears 2 library is
measured when the `gears_registration` module exists. It records the last
entry it applied in its own key.
"""

import argparse
import bisect
import importlib.util
import threading
import time

import redis

import constants
import keys
import setup
from bench import harness
from config import load_settings
from fraud_checks import ClickChecker
from redis_conn import connect as connect_service_client
from validation import parse_click

DRAIN_EVENTS = 200_000
DRAIN_EVENTS_QUICK = 50_000
FILL_BATCH = 1000  # clicks per check_many call while filling
FILL_DEVICES = 20_000  # distinct device ids of the backlog
STEADY_RATE = 5000  # events per second
STEADY_TICK_SEC = 0.02  # the producer checks STEADY_RATE * STEADY_TICK_SEC clicks per tick
STEADY_SEC, STEADY_SEC_QUICK = 30, 8
SAMPLE_INTERVAL_SEC = 0.005
DRAIN_TIMEOUT_SEC = 600.0  # a busy 2-core machine needs minutes for the RedisGears backlog
SETTLE_TIMEOUT_SEC = 30.0  # for the consumer to count the last entries after the steady run
TARGET_EVENTS_PER_SEC = 20_000
TARGET_LAG_P99_MS = 250
# A wide Redis timeout, so that a busy machine does not expire the check script.
REDIS_TIMEOUT_SEC = 5.0

MAX_SEQUENCE = 2**64
BENCH_JOIN_TIMEOUT_SEC = 120.0  # a sampler thread may wait out a long Redis stall


def parse_id(entry_id):
    """Return a stream entry id "<ms>-<seq>" as a tuple that sorts like the ids."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def gears_available():
    return importlib.util.find_spec("gears_registration") is not None


def make_settings(redis_url, consumer_kind):
    return load_settings({
        "REDIS_URL": redis_url,
        "REDIS_TIMEOUT_SEC": str(REDIS_TIMEOUT_SEC),
        "STREAM_CONSUMER": "worker" if consumer_kind == "worker" else "auto",
    })


def connect(redis_url):
    return connect_service_client(redis_url, REDIS_TIMEOUT_SEC)


class ClickSource:
    """A source of new clicks, built as the API builds them and checked with the service's script."""

    def __init__(self, client, settings, devices):
        self.checker = ClickChecker(client, settings)
        self.devices = devices
        self.count = 0

    def check(self, size):
        """Check `size` new clicks in one script call and return their stream entry ids."""
        clicks = []
        for _ in range(size):
            self.count += 1
            payload = {"device_id": f"dev-{self.count % self.devices}",
                       "ip": f"198.51.100.{self.count % 256}",
                       "transaction_id": f"tx-{self.count}"}
            clicks.append(parse_click(payload))
        return [verdict.entry_id for verdict in self.checker.check_many(clicks)]


# Counted positions ----------------------------------------------------------


def worker_position(client, stream_key):
    """Return the id through which the worker's group has acknowledged every entry."""
    pipeline = client.pipeline(transaction=False)
    pipeline.xinfo_groups(stream_key)
    pipeline.xpending(stream_key, constants.CONSUMER_GROUP)
    groups, pending = pipeline.execute()
    group = next(info for info in groups if info["name"] == constants.CONSUMER_GROUP)
    delivered = parse_id(group["last-delivered-id"])
    if not pending["pending"]:
        return delivered
    lowest = parse_id(pending["min"])
    before_lowest = (lowest[0], lowest[1] - 1) if lowest[1] else (lowest[0] - 1, MAX_SEQUENCE)
    return min(delivered, before_lowest)


def gears_position(client, stream_key):
    """Return the id of the last entry that the RedisGears consumer applied."""
    applied = client.get(keys.gears_applied_id())
    return parse_id(applied) if applied else (0, 0)


class PositionSampler(threading.Thread):
    """A thread that samples the counted position every SAMPLE_INTERVAL_SEC until stopped."""

    def __init__(self, read_position, client, stream_key):
        super().__init__(name="position-sampler", daemon=True)
        self.read_position = read_position
        self.client = client
        self.stream_key = stream_key
        self.stop_event = threading.Event()
        self.times_ms = []
        self.positions = []

    def run(self):
        while not self.stop_event.is_set():
            position = self.read_position(self.client, self.stream_key)
            now_ms = time.time() * 1000
            # Positions only move forward, and max() keeps the list that
            # bisect searches in order.
            if self.positions:
                position = max(position, self.positions[-1])
            self.times_ms.append(now_ms)
            self.positions.append(position)
            time.sleep(SAMPLE_INTERVAL_SEC)

    def stop(self):
        self.stop_event.set()
        self.join(BENCH_JOIN_TIMEOUT_SEC)

    def lags_ms(self, entry_ids):
        """Return the lag of each entry, and the number of entries never seen counted."""
        lags = []
        missing = 0
        for entry_id in entry_ids:
            parsed = parse_id(entry_id)
            index = bisect.bisect_left(self.positions, parsed)
            if index == len(self.positions):
                missing += 1
            else:
                lags.append(self.times_ms[index] - parsed[0])
        return lags, missing


class LatencyProbe(threading.Thread):
    """A thread that sends PING every SAMPLE_INTERVAL_SEC and keeps the reply times.

    The longest reply time shows how long Redis ran no other command.
    """

    def __init__(self, redis_url):
        super().__init__(name="latency-probe", daemon=True)
        self.client = harness.redis_client(redis_url)
        self.stop_event = threading.Event()
        self.latencies_ms = []

    def run(self):
        while not self.stop_event.is_set():
            started = time.monotonic()
            self.client.ping()
            self.latencies_ms.append((time.monotonic() - started) * 1000)
            time.sleep(SAMPLE_INTERVAL_SEC)

    def stop(self):
        self.stop_event.set()
        self.join(BENCH_JOIN_TIMEOUT_SEC)
        return max(self.latencies_ms, default=None)


# Consumers ------------------------------------------------------------------


class WorkerConsumer:
    """`python consumer.py` as its own process."""

    kind = "worker (consumer.py)"
    gears = False
    read_position = staticmethod(worker_position)

    def __init__(self, server, **env):
        self.server = server
        self.env = env
        self.process = None

    def start(self):
        # STREAM_CONSUMER=worker, because on a server with RedisGears the
        # default would register the library instead.
        settings = {"REDIS_TIMEOUT_SEC": REDIS_TIMEOUT_SEC, "STREAM_CONSUMER": "worker"}
        self.process = harness.start_consumer(self.server.url, **settings, **self.env)
        return self.process.process.pid

    def stop(self):
        if self.process:
            self.process.stop()


class GearsConsumer:
    """The RedisGears 2 library, registered by `setup.register_stream_consumer`."""

    kind = "RedisGears 2 library"
    gears = True
    read_position = staticmethod(gears_position)

    def __init__(self, server):
        self.server = server

    def start(self):
        # The wide timeout lets the registration wait while Redis is busy.
        client = harness.redis_client(self.server.url)
        kind = setup.register_stream_consumer(client, make_settings(self.server.url, "gears"))
        if kind == "worker":
            raise harness.BenchError("setup chose the worker on a server with RedisGears 2")
        return None  # runs inside redis-server

    def stop(self):
        pass


# Measurements ---------------------------------------------------------------


def wait_until_counted(sampler_client, read_position, stream_key, target, timeout_sec):
    """Wait until the consumer has counted the entry `target`, a parsed id.

    Returns the seconds it took, or None after `timeout_sec`.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout_sec:
        if read_position(sampler_client, stream_key) >= target:
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def measure_drain(consumer, server, events):
    """Fill the stream with `events` clicks, then time the consumer draining it.

    The counting rate runs from the first sample that shows progress to the
    last entry, so it leaves out the consumer's start-up. The wall time
    includes the start-up.
    """
    client = connect(server.url)
    settings = make_settings(server.url, "worker")
    # Creates the keys and the consumer group. Nothing consumes yet.
    setup.register_stream_consumer(client, settings)
    source = ClickSource(client, settings, FILL_DEVICES)
    filled = []
    for _ in range(events // FILL_BATCH):
        filled += [parse_id(entry_id) for entry_id in source.check(FILL_BATCH)]

    position_client = harness.redis_client(server.url)
    sampler = PositionSampler(consumer.read_position, position_client, settings.stream_key)
    probe = LatencyProbe(server.url)
    sampler.start()
    probe.start()
    redis_cpu_before = harness.cpu_seconds(server.process.pid)
    started = time.monotonic()
    consumer_pid = consumer.start()
    try:
        seconds = wait_until_counted(harness.redis_client(server.url), consumer.read_position,
                                     settings.stream_key, filled[-1], DRAIN_TIMEOUT_SEC)
        time.sleep(SAMPLE_INTERVAL_SEC * 4)  # let the sampler see the last position
    finally:
        sampler.stop()
        max_ping_ms = probe.stop()
    if seconds is None:
        raise harness.BenchError(
            f"{consumer.kind} did not count {events:,} events within {DRAIN_TIMEOUT_SEC:g} s"
        )
    consumer_cpu = harness.cpu_seconds(consumer_pid) if consumer_pid else 0.0
    redis_cpu = harness.cpu_seconds(server.process.pid) - redis_cpu_before
    rate = counting_rate(sampler, filled)
    return {
        "events": events,
        "seconds": seconds,
        # The RedisGears library counts the backlog in one go. Redis runs no
        # other command meanwhile, so only the whole run gives a rate.
        "events_per_sec": rate if rate is not None else events / seconds,
        "rate_includes_start": rate is None,
        "consumer_cpu_ms": 1e6 * consumer_cpu / events,
        "redis_cpu_ms": 1e6 * redis_cpu / events,
        "totals": series_total(position_client),
        "series_bytes_per_event": series_bytes(position_client) / events,
        "max_ping_ms": max_ping_ms,
        "last_id": filled[-1],
    }


def series_bytes(client):
    """Return the bytes of the event series (MEMORY USAGE, every sample counted)."""
    return sum(
        client.memory_usage(keys.event_series(fraud_type), samples=0) or 0
        for fraud_type in constants.FRAUD_TYPES
    )


def counting_rate(sampler, filled):
    """Return the events counted per second between the first progress and the last entry."""
    counted = [bisect.bisect_right(filled, position) for position in sampler.positions]
    first = next((i for i, count in enumerate(counted) if count > 0), None)
    last = next((i for i, count in enumerate(counted) if count == len(filled)), None)
    if first is None or last is None or last == first:
        return None
    seconds = (sampler.times_ms[last] - sampler.times_ms[first]) / 1000
    return (counted[last] - counted[first]) / seconds


def series_total(client):
    """Return the number of events counted in the time series."""
    total = 0
    for fraud_type in constants.FRAUD_TYPES:
        try:
            samples = client.ts().range(keys.event_series(fraud_type), "-", "+")
        except redis.ResponseError:
            continue
        total += int(sum(value for _, value in samples))
    return total


def produce_steadily(source, rate, seconds):
    """Check clicks at `rate` per second for `seconds`.

    Returns their entry ids and the rate reached, which falls short of `rate`
    when the machine cannot keep up.
    """
    per_tick = max(1, round(rate * STEADY_TICK_SEC))
    entry_ids = []
    started = time.monotonic()
    next_tick = started
    while time.monotonic() - started < seconds:
        entry_ids += source.check(per_tick)
        next_tick += STEADY_TICK_SEC
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return entry_ids, len(entry_ids) / (time.monotonic() - started)


def measure_lag(consumer, server, seconds):
    """Produce at STEADY_RATE while the consumer runs and return the lag percentiles."""
    client = connect(server.url)
    settings = make_settings(server.url, "gears" if consumer.gears else "worker")
    source = ClickSource(client, settings, FILL_DEVICES)
    sampler = PositionSampler(consumer.read_position, harness.redis_client(server.url),
                              settings.stream_key)
    sampler.start()
    try:
        entry_ids, rate = produce_steadily(source, STEADY_RATE, seconds)
        wait_until_counted(sampler.client, consumer.read_position, settings.stream_key,
                           parse_id(entry_ids[-1]), SETTLE_TIMEOUT_SEC)
        time.sleep(SAMPLE_INTERVAL_SEC * 4)  # let the sampler see the last position
    finally:
        sampler.stop()
    lags, missing = sampler.lags_ms(entry_ids)
    return {
        "rate": rate,
        "events": len(entry_ids),
        "p50_ms": harness.percentile(lags, 50),
        "p99_ms": harness.percentile(lags, 99),
        "max_ms": max(lags) if lags else None,
        "missing": missing,
        "last_id": entry_ids[-1],
    }


def measure_takeover(server, last_id):
    """Register the RedisGears library on a stream that the worker has counted.

    The library loaded anew reads the stream from its first entry and skips
    what the worker counted. Returns the seconds until it reaches `last_id`
    and the longest PING reply time meanwhile.
    """
    probe = LatencyProbe(server.url)
    probe.start()
    time.sleep(SAMPLE_INTERVAL_SEC * 4)
    started = time.monotonic()
    try:
        GearsConsumer(server).start()
        client = harness.redis_client(server.url)
        stream_key = make_settings(server.url, "gears").stream_key
        seconds = wait_until_counted(client, gears_position, stream_key, last_id,
                                     DRAIN_TIMEOUT_SEC)
        entries = client.xlen(stream_key)
    finally:
        max_ping_ms = probe.stop()
    return {"entries": entries, "seconds": seconds or time.monotonic() - started,
            "max_ping_ms": max_ping_ms}


def measure_consumer(consumer_class, quick):
    """Measure one consumer kind on a fresh server and return (kind, drain, lag, takeover).

    After the worker's runs, the RedisGears library is registered on the same
    stream when the server has RedisGears; takeover is None otherwise.
    """
    events = DRAIN_EVENTS_QUICK if quick else DRAIN_EVENTS
    with_gears = consumer_class.gears or gears_available()
    server = harness.start_redis(gears=with_gears)
    consumer = consumer_class(server)
    takeover = None
    try:
        drain = measure_drain(consumer, server, events)
        lag = measure_lag(consumer, server, STEADY_SEC_QUICK if quick else STEADY_SEC)
        consumer.stop()
        if with_gears and not consumer_class.gears:
            takeover = measure_takeover(server, parse_id(lag["last_id"]))
    finally:
        consumer.stop()
        server.stop()
    return consumer.kind, drain, lag, takeover


def run(quick=False):
    """Run the benchmark, print its tables and return the figures."""
    consumers = [WorkerConsumer]
    if gears_available():
        consumers.append(GearsConsumer)
    results = [measure_consumer(consumer, quick) for consumer in consumers]
    return report(results)


def report(results):
    rows = []
    for kind, drain, _, _ in results:
        rate = drain["events_per_sec"]
        rows.append([
            kind, drain["events"], drain["seconds"],
            f"{rate:,.0f} (whole run)" if drain["rate_includes_start"] else rate,
            drain["consumer_cpu_ms"], drain["redis_cpu_ms"], drain["totals"],
            drain["series_bytes_per_event"], drain["max_ping_ms"],
        ])
    harness.print_table(
        "Stream consumer: draining a backlog",
        ["consumer", "events", "seconds with start-up", "events/s after start-up",
         "consumer CPU ms/1k", "redis CPU ms/1k", "events counted", "series bytes/event",
         "longest PING ms"],
        rows,
    )
    harness.print_table(
        f"Stream consumer: lag at a steady {STEADY_RATE:,} events/s "
        f"(sampled every {SAMPLE_INTERVAL_SEC * 1000:g} ms)",
        ["consumer", "rate reached/s", "events", "lag p50 ms", "lag p99 ms", "lag max ms",
         "never counted"],
        [[kind, lag["rate"], lag["events"], lag["p50_ms"], lag["p99_ms"], lag["max_ms"],
          lag["missing"]]
         for kind, _, lag, _ in results],
    )
    takeovers = [[takeover["entries"], takeover["seconds"], takeover["max_ping_ms"]]
                 for _, _, _, takeover in results if takeover]
    if takeovers:
        harness.print_table(
            "RedisGears 2 library registered on a stream that consumer.py has counted",
            ["stream entries", "seconds until caught up", "longest PING ms"],
            takeovers,
        )
    if not gears_available():
        print("The RedisGears 2 consumer is not in this tree (no gears_registration module).")

    verdicts = {}
    for kind, drain, lag, _ in results:
        drain_met = drain["events_per_sec"] >= TARGET_EVENTS_PER_SEC
        lag_met = lag["p99_ms"] < TARGET_LAG_P99_MS and not lag["missing"]
        verdicts[kind] = drain_met and lag_met
        print(f"{kind}: " + harness.verdict(drain_met, f">= {TARGET_EVENTS_PER_SEC:,} events/s"))
        print(f"{kind}: " + harness.verdict(
            lag_met, f"lag p99 < {TARGET_LAG_P99_MS} ms at {STEADY_RATE:,} events/s"
        ))
    return {"target_met": verdicts}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true",
        help=f"{DRAIN_EVENTS_QUICK:,} events and {STEADY_SEC_QUICK} s of steady load "
             f"instead of {DRAIN_EVENTS:,} and {STEADY_SEC} s",
    )
    args = parser.parse_args(argv)
    harness.print_machine()
    run(quick=args.quick)


if __name__ == "__main__":
    main()
