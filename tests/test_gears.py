"""The RedisGears stream consumers: registration, hand-over and conformance.

The RedisGears 2 library runs live in the Redis Stack server of the test
session (RedisGears 2.0.20). No RedisGears 1.x server runs here, so the
RedisGears 1.x gear runs under tests/gears_standin.py, which executes its
`execute` calls against the same real server.
"""

import ast
import dataclasses
import threading
import time

import pytest
import redis

import constants
import gears_registration
import keys
import setup
from config import Settings
from consumer import StreamNotOwned, StreamWorker
from fraud_checks import ClickChecker
from tests.conftest import make_app
from tests.gears_standin import GearsRuntime, StandinClient
from tools.redis_stack import RedisStackServer
from validation import Click

T0 = 1_700_000_000_000  # ms since the epoch
BLACKLISTED_IP = "203.0.113.9"
CLEAN_IP = "198.51.100.7"
WINDOW_SEC = 60  # long enough that no window expires while a test runs
GEAR_WAIT_SEC = 10.0  # how long a test waits for the JavaScript trigger
LONG_EXPIRY_MS = 3_600_000  # an expiry that no consumer sets
POLL_SEC = 0.02


# Helpers -------------------------------------------------------------------


def stack_settings(server, **overrides):
    values = {"redis_url": server.url, "trust_client_ts": True, "stream_consumer": "auto",
              "click_spam_window_sec": WINDOW_SEC}
    values.update(overrides)
    return Settings(**values)


def flush_server(client):
    """Empty the server: keys, and the libraries that FLUSHALL leaves loaded."""
    client.flushall()
    for library in client.execute_command("TFUNCTION", "LIST"):
        client.execute_command("TFUNCTION", "DELETE", gears_registration.reply_to_dict(library)["name"])


def event_sequence():
    """Return the clicks of the conformance test, in order."""
    window_ms = WINDOW_SEC * 1000
    clicks = []

    def click(device_id, ts, ip=CLEAN_IP):
        clicks.append(Click(device_id, ip, f"tx-{len(clicks)}", ts, {}))

    # A burst of one device: two clean clicks, then click spam.
    for offset in (0, 100, 200, 300, 400):
        click("burst", T0 + offset)
    # A click exactly one window after the last one keeps it in the window;
    # a click much later trims the window to itself.
    click("burst", T0 + 400 + window_ms)
    click("burst", T0 + 10 * window_ms)
    # The window of the last click keeps a click exactly one window old.
    click("edge", T0 + 3_000)
    click("edge", T0 + 3_000 + window_ms)
    # Blacklisted address.
    click("blacklisted", T0 + 500, ip=BLACKLISTED_IP)
    click("blacklisted", T0 + 600, ip=BLACKLISTED_IP)
    # Two clicks in the same millisecond are two members.
    click("same-ms", T0 + 1_000)
    click("same-ms", T0 + 1_000)
    # Device ids that look like keys of the service.
    for device_id in (constants.FILTER_KEY, constants.STREAM_KEY, keys.event_series("clean"),
                      keys.device_window("x"), keys.stream_owner(), "gerät-ü"):
        click(device_id, T0 + 2_000)
    return clicks


def check_clicks(client, settings, clicks):
    """Run clicks through the real check path and return their verdicts."""
    client.execute_command("CF.ADDNX", constants.FILTER_KEY, BLACKLISTED_IP)
    return ClickChecker(client, settings).check_many(clicks)


def window_snapshot(client):
    """Return {window key: [(member, score), ...]} of every device window."""
    return {
        key: client.zrange(key, 0, -1, withscores=True)
        for key in sorted(client.scan_iter(match=keys.device_window("*"), count=1000))
    }


def windows_by_position(client, settings):
    """Return the device windows with each member replaced by its position in the stream."""
    positions = {entry_id: index for index, (entry_id, _) in enumerate(client.xrange(settings.stream_key))}
    return {
        key: [(positions[member], score) for member, score in members]
        for key, members in window_snapshot(client).items()
    }


def expiries(client):
    """Return {window key: True when it expires within one window}."""
    return {key: 0 < client.pttl(key) for key in window_snapshot(client)}


def series_totals(client):
    """Return {fraud type: (sum of all samples, labels, retention)} of the event series."""
    totals = {}
    for fraud_type in constants.FRAUD_TYPES:
        key = keys.event_series(fraud_type)
        if not client.exists(key):
            continue
        info = client.ts().info(key)
        samples = client.ts().range(key, "-", "+")
        totals[fraud_type] = (int(sum(value for _, value in samples)), info.labels, info.retention_msecs)
    return totals


def expected_totals(verdicts, settings):
    labels = {"service": constants.SERIES_LABEL_SERVICE}
    totals = {}
    for fraud_type in constants.FRAUD_TYPES:
        count = sum(1 for verdict in verdicts if verdict.fraud_type == fraud_type)
        totals[fraud_type] = (count, {**labels, "fraud_type": fraud_type}, settings.timeseries_retention_ms)
    return totals


def wait_for_gear(client, last_id, limit_sec=GEAR_WAIT_SEC):
    """Wait until a gear applied the entry `last_id`; return True when it did in time."""
    deadline = time.monotonic() + limit_sec
    while time.monotonic() < deadline:
        if client.get(keys.gears_applied_id()) == last_id:
            return True
        time.sleep(POLL_SEC)
    return False


def last_entry_id(client, settings):
    return client.xrevrange(settings.stream_key, count=1)[0][0]


def add_entries(client, settings, count, device="device", start_ts=T0):
    """Append `count` clean entries as the check path writes them; return their ids."""
    return [
        client.xadd(settings.stream_key, {"device_id": f"{device}-{i}", "ts": str(start_ts + i),
                                          "fraud_type": "clean"})
        for i in range(count)
    ]


def clean_total(client):
    samples = client.ts().range(keys.event_series("clean"), "-", "+")
    return int(sum(value for _, value in samples))


def library_names(client):
    return [gears_registration.reply_to_dict(library)["name"]
            for library in client.execute_command("TFUNCTION", "LIST")]


def run_consumer(kind, client, settings):
    """Register the consumer of `kind` on the stream that `client` holds, and let it finish."""
    if kind == "worker":
        setup.register_stream_consumer(client, dataclasses.replace(settings, stream_consumer="worker"))
        StreamWorker(client, settings, name="w1").drain()
    elif kind == "gears2":
        setup.register_stream_consumer(client, dataclasses.replace(settings, stream_consumer="gears"))
        assert wait_for_gear(client, last_entry_id(client, settings)), "the trigger did not catch up"
    else:
        runtime = GearsRuntime(client)
        try:
            standin = StandinClient(client, runtime)
            setup.register_stream_consumer(standin, dataclasses.replace(settings, stream_consumer="gears"))
            runtime.deliver()
        finally:
            runtime.close()


@pytest.fixture
def runtime(stack_redis):
    """A RedisGears 1.x stand-in runtime on the session's Redis Stack server."""
    gears_runtime = GearsRuntime(stack_redis)
    yield gears_runtime
    gears_runtime.close()


# Conformance ---------------------------------------------------------------


def test_consumers_build_identical_state(stack_server, stack_redis):
    settings = stack_settings(stack_server)
    setup.register_stream_consumer(stack_redis, dataclasses.replace(settings, stream_consumer="worker"))
    verdicts = check_clicks(stack_redis, settings, event_sequence())
    entries = stack_redis.xrange(settings.stream_key)
    check_path_windows = window_snapshot(stack_redis)
    results = {}

    for kind in ("worker", "gears2", "gears1"):
        flush_server(stack_redis)
        for entry_id, fields in entries:
            stack_redis.xadd(settings.stream_key, fields, id=entry_id)
        run_consumer(kind, stack_redis, settings)
        results[kind] = (window_snapshot(stack_redis), expiries(stack_redis), series_totals(stack_redis))

    assert [v.fraud_type for v in verdicts[:7]] == ["clean", "clean", "click_spam", "click_spam",
                                                    "click_spam", "clean", "clean"]
    assert verdicts[5].clicks_in_window == 1  # the click exactly one window old
    assert {v.fraud_type for v in verdicts[9:11]} == {"ip_blacklist"}
    assert len(results["worker"][0][keys.device_window("edge")]) == 2
    assert len(results["worker"][0][keys.device_window("same-ms")]) == 2
    assert results["worker"][0] == check_path_windows
    assert results["gears2"][0] == results["worker"][0]
    assert results["gears1"][0] == results["worker"][0]
    assert all(results["worker"][1].values())
    assert results["gears2"][1] == results["worker"][1]
    assert results["gears1"][1] == results["worker"][1]
    assert results["worker"][2] == expected_totals(verdicts, settings)
    assert results["gears2"][2] == results["worker"][2]
    assert results["gears1"][2] == results["worker"][2]


@pytest.mark.parametrize("kind", ["worker", "gears2", "gears1"])
def test_consumer_is_idempotent_with_check_path(stack_server, stack_redis, kind):
    settings = stack_settings(stack_server)
    setup.register_stream_consumer(stack_redis, dataclasses.replace(settings, stream_consumer="worker"))
    verdicts = check_clicks(stack_redis, settings, event_sequence())
    check_path_windows = windows_by_position(stack_redis, settings)
    for key in check_path_windows:
        stack_redis.pexpire(key, LONG_EXPIRY_MS)
    stack_redis.delete(keys.stream_owner())
    stack_redis.xgroup_destroy(settings.stream_key, constants.CONSUMER_GROUP)

    run_consumer(kind, stack_redis, settings)

    assert windows_by_position(stack_redis, settings) == check_path_windows
    assert series_totals(stack_redis) == expected_totals(verdicts, settings)
    # A consumer sets an expiry only on a window that has none.
    assert all(stack_redis.pttl(key) > settings.window_ms for key in check_path_windows)


def test_trigger_counts_clicks_as_they_arrive(stack_server, stack_redis):
    settings = stack_settings(stack_server)
    setup.register_stream_consumer(stack_redis, settings)
    clicks = event_sequence()

    verdicts = [check_clicks(stack_redis, settings, [click])[0] for click in clicks]

    assert wait_for_gear(stack_redis, verdicts[-1].entry_id)
    assert series_totals(stack_redis) == expected_totals(verdicts, settings)


@pytest.mark.parametrize("kind", ["worker", "gears2", "gears1"])
def test_burst_samples_never_run_ahead_of_clock(stack_server, stack_redis, kind):
    settings = stack_settings(stack_server)
    setup.register_stream_consumer(stack_redis, dataclasses.replace(settings, stream_consumer="worker"))
    add_entries(stack_redis, settings, 3000)

    run_consumer(kind, stack_redis, settings)
    seconds, micros = stack_redis.time()
    samples = stack_redis.ts().range(keys.event_series("clean"), "-", "+")

    assert clean_total(stack_redis) == 3000
    assert max(ts for ts, _ in samples) <= seconds * 1000 + micros // 1000


# Choice of the consumer ----------------------------------------------------


def test_auto_chooses_gears2_on_redis_stack(stack_server, stack_redis):
    kind = setup.choose_consumer(stack_redis, stack_settings(stack_server))

    assert kind == setup.GEARS2


def test_auto_keeps_worker_on_long_stream(stack_server, stack_redis, monkeypatch):
    monkeypatch.setattr(constants, "GEARS2_MAX_STREAM_ON_LOAD", 50)
    settings = stack_settings(stack_server)
    setup.register_stream_consumer(stack_redis, dataclasses.replace(settings, stream_consumer="worker"))
    add_entries(stack_redis, settings, 51)

    kind = setup.register_stream_consumer(stack_redis, settings)

    assert kind == "worker"
    assert library_names(stack_redis) == []


def test_forced_gears_loads_on_long_stream(stack_server, stack_redis, monkeypatch):
    monkeypatch.setattr(constants, "GEARS2_MAX_STREAM_ON_LOAD", 50)
    settings = stack_settings(stack_server)
    setup.register_stream_consumer(stack_redis, dataclasses.replace(settings, stream_consumer="worker"))
    add_entries(stack_redis, settings, 51)

    kind = setup.register_stream_consumer(stack_redis, dataclasses.replace(settings, stream_consumer="gears"))

    assert kind == "gears2"


def test_auto_chooses_gears1_with_rg(stack_server, stack_redis, runtime):
    standin = StandinClient(stack_redis, runtime)

    kind = setup.choose_consumer(standin, stack_settings(stack_server))

    assert kind == setup.GEARS1


def test_auto_chooses_worker_without_gears(fake_redis):
    kind = setup.choose_consumer(fake_redis, Settings(stream_consumer="auto"))

    assert kind == setup.WORKER


def test_forced_gears_without_module_fails(fake_redis):
    with pytest.raises(setup.SetupError, match="no RedisGears module"):
        setup.register_stream_consumer(fake_redis, Settings(stream_consumer="gears"))


def test_forced_worker_on_redis_stack(stack_server, stack_redis):
    settings = stack_settings(stack_server, stream_consumer="worker")

    kind = setup.register_stream_consumer(stack_redis, settings)

    assert kind == setup.WORKER
    assert library_names(stack_redis) == []
    assert stack_redis.get(keys.stream_owner()) == setup.WORKER


# Registration of the RedisGears 2 library ----------------------------------


def test_restart_leaves_one_registration(stack_server, stack_redis):
    settings = stack_settings(stack_server)

    first = gears_registration.register_gear(stack_redis, settings, setup.GEARS2)
    second = gears_registration.register_gear(stack_redis, settings, setup.GEARS2)

    assert (first, second) == ("registered", "unchanged")
    assert library_names(stack_redis) == [constants.GEARS_LIBRARY_NAME]
    library = gears_registration.find_library(stack_redis)
    assert library["stream_triggers"] == [constants.GEARS_TRIGGER_NAME]


def test_concurrent_starters_register_once(stack_server, stack_redis):
    settings = stack_settings(stack_server)
    ids = add_entries(stack_redis, settings, 50)
    clients = [redis.Redis.from_url(stack_server.url, decode_responses=True) for _ in range(8)]
    barrier = threading.Barrier(len(clients))
    outcomes = []

    def start(client):
        barrier.wait(timeout=10)
        outcomes.append(setup.register_stream_consumer(client, settings))

    threads = [threading.Thread(target=start, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert outcomes == [setup.GEARS2] * len(clients)
    assert library_names(stack_redis) == [constants.GEARS_LIBRARY_NAME]
    assert wait_for_gear(stack_redis, ids[-1])
    assert clean_total(stack_redis) == 50
    for client in clients:
        client.close()


def test_changed_setting_replaces_library(stack_server, stack_redis):
    settings = stack_settings(stack_server)
    gears_registration.register_gear(stack_redis, settings, setup.GEARS2)
    first_ids = add_entries(stack_redis, settings, 5)
    assert wait_for_gear(stack_redis, first_ids[-1])
    shorter = stack_settings(stack_server, click_spam_window_sec=5)

    outcome = gears_registration.register_gear(stack_redis, shorter, setup.GEARS2)
    later_ids = add_entries(stack_redis, settings, 5, device="later")

    assert outcome == "replaced"
    assert library_names(stack_redis) == [constants.GEARS_LIBRARY_NAME]
    configuration = gears_registration.find_library(stack_redis)["configuration"]
    assert '"window_ms":5000' in configuration
    assert wait_for_gear(stack_redis, later_ids[-1])
    assert clean_total(stack_redis) == 10


def test_lost_library_reloaded_without_double_count(stack_server, stack_redis):
    settings = stack_settings(stack_server)
    setup.register_stream_consumer(stack_redis, settings)
    ids = add_entries(stack_redis, settings, 20)
    assert wait_for_gear(stack_redis, ids[-1])
    stack_redis.execute_command("TFUNCTION", "DELETE", constants.GEARS_LIBRARY_NAME)

    outcome = gears_registration.register_gear(stack_redis, settings, setup.GEARS2)
    more = add_entries(stack_redis, settings, 5, device="more")

    assert outcome == "registered"
    assert wait_for_gear(stack_redis, more[-1])
    assert clean_total(stack_redis) == 25


def test_redis_restart_keeps_one_registration():
    with RedisStackServer(appendonly=True) as server:
        settings = stack_settings(server)
        client = redis.Redis.from_url(server.url, decode_responses=True)
        setup.register_stream_consumer(client, settings)
        ids = add_entries(client, settings, 5)
        assert wait_for_gear(client, ids[-1])
        client.close()

        server.restart()
        client = redis.Redis.from_url(server.url, decode_responses=True)
        outcome = gears_registration.register_gear(client, settings, setup.GEARS2)
        more = add_entries(client, settings, 1, device="after-restart")

        assert outcome == "unchanged"
        assert library_names(client) == [constants.GEARS_LIBRARY_NAME]
        assert wait_for_gear(client, more[-1])
        assert clean_total(client) == 6
        client.close()


def test_registration_lock_times_out_with_message(stack_redis):
    stack_redis.set(keys.registration_lock(), "held-by-another-process")

    with pytest.raises(gears_registration.RegistrationError, match="registration lock"):
        with gears_registration.registration_lock(stack_redis, wait_sec=0.2):
            pass


# One consumer at a time ----------------------------------------------------


def test_worker_rejected_next_to_gear(stack_server, stack_redis):
    setup.register_stream_consumer(stack_redis, stack_settings(stack_server))

    with pytest.raises(setup.SetupError, match="--switch-to-worker"):
        setup.register_stream_consumer(stack_redis, stack_settings(stack_server, stream_consumer="worker"))

    assert library_names(stack_redis) == [constants.GEARS_LIBRARY_NAME]
    assert stack_redis.get(keys.stream_owner()) == setup.GEARS2


def test_running_worker_stops_on_takeover(stack_server, stack_redis):
    worker_settings = stack_settings(stack_server, stream_consumer="worker")
    setup.register_stream_consumer(stack_redis, worker_settings)
    worker = StreamWorker(stack_redis, worker_settings, name="w1")
    add_entries(stack_redis, worker_settings, 3)
    worker.drain()
    stop_event = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop_event,))

    setup.register_stream_consumer(stack_redis, stack_settings(stack_server))
    ids = add_entries(stack_redis, worker_settings, 3, device="after")
    thread.start()
    thread.join(timeout=10)
    stop_event.set()

    assert not thread.is_alive()
    assert wait_for_gear(stack_redis, ids[-1])
    assert clean_total(stack_redis) == 6


def test_worker_script_rejects_gear_owned_stream(stack_server, stack_redis):
    worker_settings = stack_settings(stack_server, stream_consumer="worker")
    setup.register_stream_consumer(stack_redis, worker_settings)
    add_entries(stack_redis, worker_settings, 2)
    entries = stack_redis.xreadgroup(constants.CONSUMER_GROUP, "w1", {worker_settings.stream_key: ">"})[0][1]
    stack_redis.set(keys.stream_owner(), setup.GEARS2)

    with pytest.raises(StreamNotOwned):
        StreamWorker(stack_redis, worker_settings, name="w1").apply(entries)

    assert stack_redis.xpending(worker_settings.stream_key, constants.CONSUMER_GROUP)["pending"] == 2


def test_gear_skips_worker_owned_stream(stack_server, stack_redis):
    settings = stack_settings(stack_server)
    setup.register_stream_consumer(stack_redis, settings)
    stack_redis.set(keys.stream_owner(), setup.WORKER)

    add_entries(stack_redis, settings, 3)
    marker = add_entries(stack_redis, settings, 1, device="marker")

    assert not wait_for_gear(stack_redis, marker[-1], limit_sec=0.5)
    assert clean_total(stack_redis) == 0
    assert window_snapshot(stack_redis) == {}


def test_gear_claims_stream_after_flush(stack_server, stack_redis):
    settings = stack_settings(stack_server)
    setup.register_stream_consumer(stack_redis, settings)
    stack_redis.flushall()

    ids = add_entries(stack_redis, settings, 3)

    assert wait_for_gear(stack_redis, ids[-1])
    assert stack_redis.get(keys.stream_owner()) == setup.GEARS2
    assert series_totals(stack_redis)["clean"] == (3, {"service": constants.SERIES_LABEL_SERVICE,
                                                       "fraud_type": "clean"},
                                                   settings.timeseries_retention_ms)


def test_worker_to_gear_counts_once(stack_server, stack_redis):
    worker_settings = stack_settings(stack_server, stream_consumer="worker")
    setup.register_stream_consumer(stack_redis, worker_settings)
    add_entries(stack_redis, worker_settings, 10, device="applied")
    StreamWorker(stack_redis, worker_settings, name="w1").drain()
    # A worker reads five entries and dies before applying them.
    add_entries(stack_redis, worker_settings, 5, device="pending")
    stack_redis.xreadgroup(constants.CONSUMER_GROUP, "dead", {worker_settings.stream_key: ">"})
    add_entries(stack_redis, worker_settings, 5, device="unread")

    setup.register_stream_consumer(stack_redis, stack_settings(stack_server))
    ids = add_entries(stack_redis, worker_settings, 5, device="new")

    assert wait_for_gear(stack_redis, ids[-1])
    assert clean_total(stack_redis) == 25
    assert stack_redis.xpending(worker_settings.stream_key, constants.CONSUMER_GROUP)["pending"] == 0
    assert len(window_snapshot(stack_redis)) == 25


def test_gear_to_worker_counts_once(stack_server, stack_redis):
    gear_settings = stack_settings(stack_server)
    setup.register_stream_consumer(stack_redis, gear_settings)
    ids = add_entries(stack_redis, gear_settings, 10, device="gear")
    assert wait_for_gear(stack_redis, ids[-1])
    # A worker that has not noticed the gear reads entries the gear applied.
    stack_redis.xgroup_create(gear_settings.stream_key, constants.CONSUMER_GROUP, id="0")
    stack_redis.xreadgroup(constants.CONSUMER_GROUP, "late", {gear_settings.stream_key: ">"})

    kind = setup.switch_to_worker(stack_redis, gear_settings)
    add_entries(stack_redis, gear_settings, 5, device="worker")
    applied = StreamWorker(stack_redis, gear_settings, name="w1").drain()

    assert kind == setup.WORKER
    assert library_names(stack_redis) == []
    assert stack_redis.get(keys.stream_owner()) == setup.WORKER
    assert applied == 5
    assert clean_total(stack_redis) == 15


def test_switch_back_and_forth_counts_once(stack_server, stack_redis):
    gear_settings = stack_settings(stack_server)
    worker_settings = stack_settings(stack_server, stream_consumer="worker")
    setup.register_stream_consumer(stack_redis, gear_settings)
    ids = add_entries(stack_redis, gear_settings, 4, device="a")
    assert wait_for_gear(stack_redis, ids[-1])
    setup.switch_to_worker(stack_redis, gear_settings)
    add_entries(stack_redis, gear_settings, 4, device="b")
    StreamWorker(stack_redis, worker_settings, name="w1").drain()

    setup.register_stream_consumer(stack_redis, gear_settings)
    ids = add_entries(stack_redis, gear_settings, 4, device="c")

    assert wait_for_gear(stack_redis, ids[-1])
    assert clean_total(stack_redis) == 12


# Failures ------------------------------------------------------------------


def test_gear_failure_is_recorded_and_reported(stack_server, stack_redis):
    settings = stack_settings(stack_server)
    app = make_app(stack_redis, settings)
    stack_redis.set(keys.device_window("broken"), "not a sorted set")
    failing_id = stack_redis.xadd(settings.stream_key, {"device_id": "broken", "ts": str(T0),
                                                         "fraud_type": "clean"})
    ids = add_entries(stack_redis, settings, 2)

    assert wait_for_gear(stack_redis, ids[-1])
    report = app.test_client().get("/readyz").get_json()
    error_entries = stack_redis.xrange(keys.gears_errors())

    assert report["consumer"] == setup.GEARS2
    assert report["consumer_active"] is True
    assert report["gear_failures"] == 1
    assert report["gear_last_error"]["entry_id"] == failing_id
    assert "WRONGTYPE" in report["gear_last_error"]["error"]
    assert [fields["entry_id"] for _, fields in error_entries] == [failing_id]
    assert clean_total(stack_redis) == 2
    trigger = stack_redis.execute_command("TFUNCTION", "LIST", "vvv")[0]["stream_triggers"][0]
    assert "WRONGTYPE" in trigger["streams"][0]["last_error"]
    with open(stack_server.log_path, encoding="utf-8") as log:
        assert f"entry {failing_id} of {settings.stream_key} not counted" in log.read()


def test_gear_counts_invalid_entry_as_failure(stack_server, stack_redis):
    settings = stack_settings(stack_server)
    setup.register_stream_consumer(stack_redis, settings)
    invalid_id = stack_redis.xadd(settings.stream_key, {"device_id": "d", "ts": "1", "fraud_type": "bogus"})
    ids = add_entries(stack_redis, settings, 1)

    assert wait_for_gear(stack_redis, ids[-1])
    assert stack_redis.get(keys.gears_failures()) == "1"
    assert stack_redis.xrange(keys.gears_errors())[0][1]["entry_id"] == invalid_id
    assert series_totals(stack_redis)["clean"][0] == 1


def test_readiness_reports_missing_registration(stack_server, stack_redis):
    settings = stack_settings(stack_server)
    app = make_app(stack_redis, settings)
    stack_redis.execute_command("TFUNCTION", "DELETE", constants.GEARS_LIBRARY_NAME)

    response = app.test_client().get("/readyz")

    assert response.status_code == 503
    assert response.get_json()["gear_registered"] is False


# The RedisGears 1.x gear under the stand-in ----------------------------------


def test_gear1_registered_once_then_replaced(stack_server, stack_redis, runtime):
    standin = StandinClient(stack_redis, runtime)
    settings = stack_settings(stack_server)

    first = gears_registration.register_gear(standin, settings, setup.GEARS1)
    second = gears_registration.register_gear(standin, settings, setup.GEARS1)
    third = gears_registration.register_gear(standin, stack_settings(stack_server, click_spam_window_sec=5),
                                             setup.GEARS1)

    assert (first, second, third) == ("registered", "unchanged", "replaced")
    assert len(runtime.registrations) == 1
    registration = runtime.registrations[0]
    assert registration.description.startswith(constants.GEAR_DESCRIPTION_PREFIX + " ")
    assert registration.trim_stream is False
    assert registration.prefix == settings.stream_key
    assert registration.mode == "async_local"


def test_gear1_failure_is_recorded(stack_server, stack_redis, runtime):
    standin = StandinClient(stack_redis, runtime)
    settings = stack_settings(stack_server)
    setup.register_stream_consumer(standin, settings)
    stack_redis.set(keys.device_window("broken"), "not a sorted set")
    failing_id = stack_redis.xadd(settings.stream_key, {"device_id": "broken", "ts": str(T0),
                                                         "fraud_type": "clean"})
    add_entries(stack_redis, settings, 2)

    runtime.deliver()
    registration = gears_registration.reply_to_dict(runtime.dump_registrations()[0])
    status = gears_registration.gear_status(standin, setup.GEARS1)

    assert status["gear_failures"] == 1
    assert status["gear_last_error"]["entry_id"] == failing_id
    assert gears_registration.reply_to_dict(registration["RegistrationData"])["numFailures"] == 1
    assert any(level == "warning" and failing_id in message for level, message in runtime.log_lines)
    assert clean_total(stack_redis) == 2


def test_gear1_to_worker_counts_once(stack_server, stack_redis, runtime):
    standin = StandinClient(stack_redis, runtime)
    settings = stack_settings(stack_server)
    setup.register_stream_consumer(standin, settings)
    add_entries(stack_redis, settings, 6)
    runtime.deliver()

    setup.switch_to_worker(standin, settings)
    add_entries(stack_redis, settings, 4, device="worker")
    applied = StreamWorker(stack_redis, settings, name="w1").drain()

    assert runtime.registrations == []
    assert applied == 4
    assert clean_total(stack_redis) == 10


def test_gear1_uses_only_standard_library():
    with open(gears_registration.GEAR_FILE, encoding="utf-8") as source:
        tree = ast.parse(source.read(), feature_version=(3, 7))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])

    assert imported == {"json"}
