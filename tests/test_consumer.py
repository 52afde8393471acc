"""The built-in stream consumer, on fakeredis and on the real Redis Stack server."""

import threading
import time

import constants
import keys
from consumer import StreamWorker
from ip_lists.entries import parse_entry
from ip_lists.store import IpList
from tests.conftest import post_click


def series_total(redis_client, fraud_type):
    samples = redis_client.ts().range(keys.event_series(fraud_type), "-", "+")
    return int(sum(value for _, value in samples))


def totals(redis_client):
    return {fraud_type: series_total(redis_client, fraud_type) for fraud_type in constants.FRAUD_TYPES}


def test_worker_counts_each_fraud_type(client, redis_client, settings):
    redis_client.execute_command("CF.ADDNX", "ip_cf", "203.0.113.7")
    for i in range(3):
        post_click(client, transaction_id=f"tx-{i}")
    post_click(client, device_id="other", ip="203.0.113.7")

    applied = StreamWorker(redis_client, settings, name="w1").drain()

    assert applied == 4
    assert totals(redis_client) == {"clean": 2, "ip_blacklist": 1, "click_spam": 1}


def test_worker_is_idempotent_with_check_path(client, redis_client, settings):
    for i in range(3):
        post_click(client, transaction_id=f"tx-{i}")
    window = keys.device_window("device-1")
    before = redis_client.zrange(window, 0, -1, withscores=True)

    StreamWorker(redis_client, settings, name="w1").drain()

    assert redis_client.zrange(window, 0, -1, withscores=True) == before


def test_worker_acknowledges_what_it_applies(client, redis_client, settings):
    for i in range(5):
        post_click(client, device_id=f"d{i}")

    StreamWorker(redis_client, settings, name="w1").drain()

    pending = redis_client.xpending(settings.stream_key, constants.CONSUMER_GROUP)
    assert pending["pending"] == 0


def test_applying_twice_counts_once(client, redis_client, settings):
    for i in range(4):
        post_click(client, device_id=f"d{i}")
    worker = StreamWorker(redis_client, settings, name="w1")
    reply = redis_client.xreadgroup(
        constants.CONSUMER_GROUP, "w1", {settings.stream_key: ">"}, count=100
    )
    entries = reply[0][1]

    first = worker.apply(entries)
    second = worker.apply(entries)

    assert first == [4, 0, 0]
    assert second == [0, 4, 0]
    assert totals(redis_client)["clean"] == 4


def test_dead_consumer_entries_are_reclaimed(client, redis_client, settings):
    fast_claim = settings.__class__(**{**settings.__dict__, "consumer_claim_idle_ms": 100})
    for i in range(6):
        post_click(client, device_id=f"d{i}")
    # A consumer reads the entries, then dies before applying them.
    redis_client.xreadgroup(constants.CONSUMER_GROUP, "dead", {settings.stream_key: ">"}, count=100)
    threading.Event().wait(0.2)

    applied = StreamWorker(redis_client, fast_claim, name="alive").drain()

    assert applied == 6
    assert totals(redis_client)["clean"] == 6
    assert redis_client.xpending(settings.stream_key, constants.CONSUMER_GROUP)["pending"] == 0


def test_worker_recreates_a_trimmed_window_with_expiry(client, redis_client, settings):
    post_click(client)
    window = keys.device_window("device-1")
    redis_client.delete(window)

    StreamWorker(redis_client, settings, name="w1").drain()

    assert redis_client.zcard(window) == 1
    assert 0 < redis_client.pttl(window) <= settings.window_ms


def test_unknown_fraud_type_acknowledged_uncounted(redis_client, client, settings):
    redis_client.xadd(settings.stream_key, {"device_id": "d", "ts": "1", "fraud_type": "bogus"})

    applied = StreamWorker(redis_client, settings, name="w1").drain()

    assert applied == 0
    assert totals(redis_client) == {"clean": 0, "ip_blacklist": 0, "click_spam": 0}
    assert redis_client.xpending(settings.stream_key, constants.CONSUMER_GROUP)["pending"] == 0


def test_samples_never_run_ahead_of_clock(client, redis_client, settings):
    worker = StreamWorker(redis_client, settings, name="w1")
    for i in range(60):
        post_click(client, device_id=f"d{i}")
    reply = redis_client.xreadgroup(
        constants.CONSUMER_GROUP, "w1", {settings.stream_key: ">"}, count=100
    )
    entries = reply[0][1]

    for entry in entries:  # one batch per entry, many in one millisecond
        worker.apply([entry])
    seconds, micros = redis_client.time()
    now_ms = seconds * 1000 + micros // 1000

    samples = redis_client.ts().range(keys.event_series("clean"), "-", "+")
    assert sum(value for _, value in samples) == 60
    assert max(ts for ts, _ in samples) <= now_ms
    assert len(samples) < 60


def test_worker_sweeps_expired_list_entries(client, redis_client, settings):
    blacklist = IpList(redis_client, constants.BLACKLIST, settings)
    now_ms = blacklist.now_ms()
    blacklist.add([parse_entry("203.0.113.0/24"), parse_entry("198.51.100.9")], expires_at=now_ms + 50)
    blacklist.add([parse_entry("192.0.2.0/24")])
    time.sleep(0.1)

    StreamWorker(redis_client, settings, name="w1").process_once(block_ms=0)

    assert blacklist.get(parse_entry("203.0.113.0/24")) is None
    assert blacklist.get(parse_entry("198.51.100.9")) is None
    assert blacklist.get(parse_entry("192.0.2.0/24")) is not None
    assert not blacklist.has_expired_entries()
