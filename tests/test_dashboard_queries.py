"""Every query of the Grafana dashboards, run against a real Redis Stack server.

`target_command` turns a panel target into the command that the Redis data
source plugin (redis-datasource 2.x, RedisGrafana) sends. Its backend builds
the commands like this:

- `timeSeries` / `ts.range`:  ts.range KEY FROM TO [AGGREGATION AGG BUCKET]
- `timeSeries` / `ts.mrange`: ts.mrange FROM TO [AGGREGATION AGG BUCKET]
  WITHLABELS FILTER FILTER...
- a target with a `query` (the CLI type): the query split into words as a
  POSIX shell would, after Grafana replaced its variables (here `${__from}`
  and `${__to}`, the dashboard range in epoch milliseconds).

FROM and TO are the dashboard range in milliseconds. The plugin talks RESP2,
so the commands run on a RESP2 connection and the tests read RESP2 replies.
The events are written straight into the time series with TS.CREATE and
TS.ADD, one sample per consumer write, as docs/design.md describes.
"""

import json
import re
import shlex
from pathlib import Path

import pytest
import redis

import constants
import keys

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_FILE = ROOT / "grafana" / "dashboards" / "fraud-stats.json"

# The replayed minute: EVENTS_PER_SECOND[fraud_type](k) events in second k,
# split over two consumer writes. A write that counted nothing adds no sample.
RANGE_START_MS = 1_700_000_000_000
RANGE_SECONDS = 60
RANGE_END_MS = RANGE_START_MS + RANGE_SECONDS * 1000 - 1
EVENTS_PER_SECOND = {
    constants.CLEAN: lambda second: 3 + second % 5,
    constants.IP_BLACKLIST: lambda second: second % 3,
    constants.CLICK_SPAM: lambda second: second % 4,
}
# Samples just outside the range, which no panel may count.
OUTSIDE_SAMPLES = [(RANGE_START_MS - 1, 100), (RANGE_END_MS + 1, 100)]

BLACKLISTED = ["198.51.100.1", "198.51.100.2", "203.0.113.9", "203.0.113.10", "192.0.2.44"]
UNLISTED = "203.0.113.10"  # deleted again, so the filter contains four items


class UnsupportedTarget(ValueError):
    """A panel target uses a plugin feature that `target_command` does not model."""


def apply_template_variables(text, from_ms, to_ms):
    """Replace Grafana's range variables and raise on any other variable."""
    values = {"__from": str(from_ms), "__to": str(to_ms)}

    def replace(match):
        name = match.group(1) or match.group(2)
        if name not in values:
            raise UnsupportedTarget(f"unknown Grafana variable ${name} in {text!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, text)


def target_command(target, from_ms, to_ms):
    """Return the command that the plugin runs for `target`, as a list of arguments."""
    query = target.get("query")
    if query:
        return shlex.split(apply_template_variables(query, from_ms, to_ms))

    command = target.get("command")
    if target.get("type") != "timeSeries" or command not in ("ts.range", "ts.mrange"):
        raise UnsupportedTarget(f"type {target.get('type')!r}, command {command!r}")

    aggregation = []
    if target.get("aggregation"):
        aggregation = ["AGGREGATION", target["aggregation"], str(target["bucket"])]
    if command == "ts.range":
        return [command, target["keyName"], str(from_ms), str(to_ms), *aggregation]
    filters = shlex.split(apply_template_variables(target["filter"], from_ms, to_ms))
    return [command, str(from_ms), str(to_ms), *aggregation, "WITHLABELS", "FILTER", *filters]


def dashboard_commands(dashboard, from_ms, to_ms):
    """Return {(panel title, refId): command} for every target of `dashboard`."""
    return {
        (panel["title"], target["refId"]): target_command(target, from_ms, to_ms)
        for panel in dashboard["panels"]
        for target in panel["targets"]
    }


def run_resp2(client, command):
    """Run `command` on a new RESP2 connection to the server of `client`."""
    kwargs = client.connection_pool.connection_kwargs
    connection = redis.Connection(host=kwargs["host"], port=kwargs["port"], protocol=2,
                                  decode_responses=True)
    try:
        connection.send_command(*command)
        return connection.read_response()
    finally:
        connection.disconnect()


def series_samples(mrange_reply):
    """Return {fraud_type label: [(timestamp, value)]} from a TS.MRANGE WITHLABELS reply."""
    series = {}
    for _key, labels, samples in mrange_reply:
        fraud_type = dict(labels)["fraud_type"]
        series[fraud_type] = [(int(timestamp), float(value)) for timestamp, value in samples]
    return series


@pytest.fixture(scope="module")
def dashboard():
    return json.loads(DASHBOARD_FILE.read_text())


@pytest.fixture
def commands(dashboard):
    return dashboard_commands(dashboard, RANGE_START_MS, RANGE_END_MS)


@pytest.fixture
def replayed_events(stack_redis):
    """Write one minute of counted events and a blacklist of four addresses.

    Returns the expected counts as {fraud_type: {second: events}}.
    """
    expected = {}
    for fraud_type, per_second in EVENTS_PER_SECOND.items():
        key = keys.event_series(fraud_type)
        stack_redis.execute_command("TS.CREATE", key, "LABELS", "service",
                                    constants.SERIES_LABEL_SERVICE, "fraud_type", fraud_type)
        samples = list(OUTSIDE_SAMPLES)
        expected[fraud_type] = {}
        for second in range(RANGE_SECONDS):
            events = per_second(second)
            expected[fraud_type][second] = events
            first_write = events // 2
            second_start = RANGE_START_MS + second * 1000
            writes = [(second_start + 100, first_write), (second_start + 600, events - first_write)]
            samples += [(timestamp, count) for timestamp, count in writes if count]
        for timestamp, events in sorted(samples):
            stack_redis.execute_command("TS.ADD", key, timestamp, events)

    stack_redis.execute_command("CF.RESERVE", constants.FILTER_KEY, 1000)
    for address in BLACKLISTED:
        stack_redis.execute_command("CF.ADD", constants.FILTER_KEY, address)
    stack_redis.execute_command("CF.DEL", constants.FILTER_KEY, UNLISTED)
    return expected


def test_target_command_for_mrange_matches_plugin():
    target = {"type": "timeSeries", "command": "ts.mrange", "filter": "service=fraud-detector",
              "aggregation": "sum", "bucket": 1000, "legend": "fraud_type"}

    assert target_command(target, 10, 20) == [
        "ts.mrange", "10", "20", "AGGREGATION", "sum", "1000",
        "WITHLABELS", "FILTER", "service=fraud-detector",
    ]


def test_target_command_for_range_without_aggregation():
    target = {"type": "timeSeries", "command": "ts.range", "keyName": "series"}

    assert target_command(target, 10, 20) == ["ts.range", "series", "10", "20"]


def test_target_command_replaces_range_variables():
    target = {"type": "cli", "query": 'EVAL_RO "return 1" 0 ${__from} $__to'}

    assert target_command(target, 10, 20) == ["EVAL_RO", "return 1", "0", "10", "20"]


def test_target_command_rejects_unknown_variable():
    with pytest.raises(UnsupportedTarget):
        target_command({"type": "cli", "query": "GET $device"}, 10, 20)


def test_every_target_becomes_a_command(commands):
    assert len(commands) == 4
    for (title, ref_id), command in commands.items():
        assert command, f"{title} / {ref_id} gives an empty command"


def test_panel_commands_run_without_error(commands, stack_redis, replayed_events):
    for (title, ref_id), command in commands.items():
        try:
            run_resp2(stack_redis, command)
        except redis.ResponseError as error:
            pytest.fail(f"{title} / {ref_id}: {' '.join(command)[:120]} failed: {error}")


def test_events_per_second_panel_counts_each_second(commands, stack_redis, replayed_events):
    command = commands[("Events per second by fraud type", "A")]

    series = series_samples(run_resp2(stack_redis, command))

    assert set(series) == set(constants.FRAUD_TYPES)
    for fraud_type, samples in series.items():
        expected = {RANGE_START_MS + second * 1000: float(events)
                    for second, events in replayed_events[fraud_type].items() if events}
        assert dict(samples) == expected, fraud_type


def test_range_totals_panel_sums_the_range(commands, stack_redis, replayed_events):
    command = commands[("Events in range by fraud type", "A")]

    series = series_samples(run_resp2(stack_redis, command))

    # The stat panel reduces each series with "sum".
    totals = {fraud_type: sum(value for _, value in samples) for fraud_type, samples in series.items()}
    assert totals == {fraud_type: float(sum(per_second.values()))
                      for fraud_type, per_second in replayed_events.items()}


def test_fraud_share_panel_divides_fraud_by_all(commands, stack_redis, replayed_events):
    command = commands[("Fraud share", "A")]
    totals = {fraud_type: sum(per_second.values()) for fraud_type, per_second in replayed_events.items()}
    fraud = totals[constants.IP_BLACKLIST] + totals[constants.CLICK_SPAM]

    share = float(run_resp2(stack_redis, command))

    assert share == pytest.approx(fraud / sum(totals.values()), rel=1e-12)


def test_fraud_share_panel_counts_only_the_range(dashboard, stack_redis, replayed_events):
    first_second = dashboard_commands(dashboard, RANGE_START_MS, RANGE_START_MS + 999)
    events = {fraud_type: per_second[0] for fraud_type, per_second in replayed_events.items()}
    fraud = events[constants.IP_BLACKLIST] + events[constants.CLICK_SPAM]

    share = float(run_resp2(stack_redis, first_second[("Fraud share", "A")]))

    assert share == pytest.approx(fraud / sum(events.values()), rel=1e-12)


def test_fraud_share_panel_is_zero_without_events(dashboard, stack_redis, replayed_events):
    later = RANGE_END_MS + 10_000
    empty_range = dashboard_commands(dashboard, later, later + 60_000)

    assert run_resp2(stack_redis, empty_range[("Fraud share", "A")]) == "0"


def test_blacklist_size_panel_counts_filter_items(commands, stack_redis, replayed_events):
    command = commands[("Blacklist size (ip_cf)", "A")]

    assert run_resp2(stack_redis, command) == len(BLACKLISTED) - 1
