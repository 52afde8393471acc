"""Benchmark 5: Redis memory per active device, and none for idle devices.

    python -m bench.memory [--quick]

On its own Redis Stack server, with no stream consumer, the benchmark:

1. checks 1,000,000 clicks from 100,000 devices with
   `fraud_checks.ClickChecker.check_many` in batches of 1,000, with client
   timestamps spread over 90% of the click-spam window, so every click of a
   device is still in its window at the end.
2. checks one more click per device, timestamped one window later, so each
   window trims to that one click.
3. waits until the device windows expire (`PEXPIRE` of one window after
   their last write, in Redis time).

After each step it reads `INFO memory` used_memory, the number of keys with
an expiry (the device windows are the only ones), `MEMORY USAGE` of the
stream and of a sample of device windows. The window is 60 s here, longer
than the default 10 s, so that no window expires while the backlog is
written on a slow machine.
"""

import argparse
import random
import time

import keys
import setup
from bench import harness
from config import load_settings
from fraud_checks import ClickChecker
from redis_conn import connect
from validation import parse_click

CLICKS, DEVICES, WINDOW_SEC = 1_000_000, 100_000, 60
CLICKS_QUICK, DEVICES_QUICK, WINDOW_SEC_QUICK = 100_000, 10_000, 10
BATCH = 1000  # clicks per check_many call
WINDOW_SPREAD = 0.9  # share of the window that the timestamps of the fill cover
SAMPLED_WINDOWS = 1000  # device windows measured with MEMORY USAGE
EXPIRY_GRACE_SEC = 30.0  # on top of the window, for Redis's active expiry to remove the keys
REDIS_TIMEOUT_SEC = 5.0  # wide, so that a busy machine does not expire the check script


def device_id(index):
    return f"device-{index:08d}"


def check_clicks(checker, first, count, devices, base_ts, step_ms):
    """Check clicks first..first+count-1, click k from device k % devices at base_ts + k * step_ms."""
    for start in range(first, first + count, BATCH):
        clicks = [
            parse_click({
                "device_id": device_id(k % devices),
                "ip": f"198.51.100.{k % 256}",
                "transaction_id": f"tx-{k}",
                "ts": int(base_ts + k * step_ms),
            }, trust_client_ts=True)
            for k in range(start, min(start + BATCH, first + count))
        ]
        checker.check_many(clicks)


def snapshot(client, stream_key, devices):
    """Return used_memory, stream bytes, device window count and sampled window bytes."""
    used = client.info("memory")["used_memory"]
    keyspace = client.info("keyspace").get("db0", {})
    stream_bytes = client.memory_usage(stream_key, samples=0) or 0
    sample = random.Random(7).sample(range(devices), min(SAMPLED_WINDOWS, devices))
    sizes = [client.memory_usage(keys.device_window(device_id(i)), samples=0) for i in sample]
    live = [size for size in sizes if size]
    return {
        "used_memory": used,
        "stream_bytes": stream_bytes,
        "stream_entries": client.xlen(stream_key),
        "windows": keyspace.get("expires", 0),
        "window_bytes": sum(live) / len(live) if live else 0,
        "window_members": harness.median(
            [client.zcard(keys.device_window(device_id(i))) for i in sample[:100]]
        ),
    }


def wait_for_expiry(client, since, timeout_sec):
    """Wait until no key has an expiry left.

    Returns the seconds from `since`, a time.monotonic() value, or None after `timeout_sec`.
    """
    while time.monotonic() - since < timeout_sec:
        if client.info("keyspace").get("db0", {}).get("expires", 0) == 0:
            return time.monotonic() - since
        time.sleep(0.5)
    return None


def measure(server, clicks, devices, window_sec):
    settings = load_settings({
        "REDIS_URL": server.url,
        "REDIS_TIMEOUT_SEC": str(REDIS_TIMEOUT_SEC),
        "CLICK_SPAM_WINDOW_IN_SEC": str(window_sec),
        "TRUST_CLIENT_TS": "1",
        "STREAM_CONSUMER": "worker",
    })
    service_client = connect(server.url, REDIS_TIMEOUT_SEC)
    setup.register_stream_consumer(service_client, settings)
    checker = ClickChecker(service_client, settings)
    client = harness.redis_client(server.url)
    states = {"empty": snapshot(client, settings.stream_key, devices)}

    window_ms = window_sec * 1000
    base_ts = int(time.time() * 1000)
    started = time.monotonic()
    check_clicks(checker, 0, clicks, devices, base_ts, window_ms * WINDOW_SPREAD / clicks)
    fill_sec = time.monotonic() - started
    states[f"{clicks // devices} clicks per device"] = snapshot(client, settings.stream_key, devices)

    # One click per device, a full window after the last one, so each window
    # trims everything but this click.
    later_ts = base_ts + window_ms * (1 + WINDOW_SPREAD)
    check_clicks(checker, clicks, devices, devices, later_ts, 0)
    last_click = time.monotonic()
    states["1 more click, 1 window later"] = snapshot(client, settings.stream_key, devices)

    waited = wait_for_expiry(client, last_click, window_sec + EXPIRY_GRACE_SEC)
    states["idle for 1 window"] = snapshot(client, settings.stream_key, devices)
    return states, fill_sec, waited


def run(quick=False):
    """Run the benchmark, print its table and return the figures."""
    clicks, devices, window_sec = (
        (CLICKS_QUICK, DEVICES_QUICK, WINDOW_SEC_QUICK) if quick else (CLICKS, DEVICES, WINDOW_SEC)
    )
    server = harness.start_redis()
    try:
        states, fill_sec, waited = measure(server, clicks, devices, window_sec)
    finally:
        server.stop()
    return report(states, clicks, devices, window_sec, fill_sec, waited)


def report(states, clicks, devices, window_sec, fill_sec, waited):
    empty = states["empty"]
    rows = []
    for name, state in states.items():
        growth = state["used_memory"] - empty["used_memory"]
        windows_total = growth - (state["stream_bytes"] - empty["stream_bytes"])
        rows.append([
            name, state["used_memory"] / 2**20, growth / 2**20,
            state["stream_entries"], state["stream_bytes"] / 2**20,
            state["windows"], state["window_members"],
            windows_total / devices, state["window_bytes"],
        ])
    harness.print_table(
        f"Memory: {clicks:,} clicks from {devices:,} devices, window {window_sec} s "
        f"(filled in {fill_sec:.0f} s)",
        ["state", "used_memory MiB", "growth MiB", "stream entries", "stream MiB",
         "device windows", "members per window (median)",
         "bytes per device (growth - stream)", "MEMORY USAGE per window"],
        rows,
    )
    idle = states["idle for 1 window"]
    if waited is None:
        print(f"Device windows still present {window_sec + EXPIRY_GRACE_SEC:g} s after the "
              f"last click: {idle['windows']:,}")
    else:
        print(f"Every device window had expired {waited:.1f} s after the last click "
              f"(window {window_sec} s).")
    met = waited is not None and idle["windows"] == 0
    print(harness.verdict(met, "idle devices hold no memory after one window"))
    return {"target_met": met}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true",
        help=f"{CLICKS_QUICK:,} clicks from {DEVICES_QUICK:,} devices and a "
             f"{WINDOW_SEC_QUICK} s window instead of {CLICKS:,}, {DEVICES:,} and {WINDOW_SEC} s",
    )
    args = parser.parse_args(argv)
    harness.print_machine()
    run(quick=args.quick)


if __name__ == "__main__":
    main()
