"""Tests of replay.py and the clickreplay package.

The row mapping and the malformed-row handling run on slices of the real
TalkingData sample, cut at run time. The sender runs against a small HTTP
server in this process, and the end-to-end tests run `replay.py` against
`app.py` started as a subprocess with its embedded Redis.
"""

import http.server
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import redis
import requests

from clickreplay import sender
from clickreplay.sender import RequestResult, classify_response, send_clicks
from clickreplay.summary import ReplayTally, latency_percentiles_ms
from clickreplay.talkingdata import (
    InvalidLog,
    InvalidRow,
    LogClick,
    parse_click_time,
    parse_ip,
    read_clicks,
    row_to_click,
)
from tests.conftest import DATA_DIR, ROOT
from replay import run_replay

SAMPLE = os.path.join(DATA_DIR, "talkingdata_train_sample.csv")
REPLAY = os.path.join(ROOT, "replay.py")
HEADER = "ip,app,device,os,channel,click_time,attributed_time,is_attributed"

SERVICE_START_TIMEOUT_SEC = 30
REPLAY_TIMEOUT_SEC = 120


def cut_sample(tmp_path, data_rows, name="slice.csv"):
    """Copy the header and the first `data_rows` rows of the real sample to tmp_path."""
    with open(SAMPLE, encoding="utf-8") as file:
        lines = list(itertools.islice(file, data_rows + 1))
    path = tmp_path / name
    path.write_text("".join(lines), encoding="utf-8")
    return path, lines


def write_log(tmp_path, rows, name="log.csv"):
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Row mapping


def test_row_to_click_maps_first_sample_row():
    # The first data row of the sample.
    row = {
        "ip": "87540", "app": "12", "device": "1", "os": "13", "channel": "497",
        "click_time": "2017-11-07 09:30:38", "attributed_time": "", "is_attributed": "0",
    }

    click = row_to_click(row, "sample-2")

    assert click["device_id"] == "87540-1-13"
    assert click["ip"] == "0.1.85.244"
    assert click["transaction_id"] == "sample-2"
    assert click["ts"] == 1_510_047_038_000
    assert click["app"] == 12
    assert click["channel"] == 497
    assert click["os"] == 13
    assert click["device"] == 1
    assert click["is_attributed"] == 0
    assert "attributed_time" not in click


@pytest.mark.parametrize(("code", "address"), [
    ("0", "0.0.0.0"),
    ("87540", "0.1.85.244"),
    ("3232235777", "192.168.1.1"),
    ("4294967295", "255.255.255.255"),
])
def test_parse_ip_gives_dotted_address(code, address):
    assert str(parse_ip(code)) == address


@pytest.mark.parametrize("code", ["4294967296", "-1", "1.2.3.4", "", "12a", "0x10"])
def test_parse_ip_rejects_invalid_code(code):
    with pytest.raises(InvalidRow, match="column 'ip'"):
        parse_ip(code)


@pytest.mark.parametrize(("text", "ms"), [
    ("1970-01-01 00:00:00", 0),
    ("2017-11-06 16:00:00", 1_509_984_000_000),
    ("2017-11-07 09:30:38", 1_510_047_038_000),
    ("2016-02-29 23:59:59", 1_456_790_399_000),
])
def test_parse_click_time_is_utc_ms(text, ms):
    assert parse_click_time(text) == ms


@pytest.mark.parametrize("text", [
    "2017-11-07T09:30:38",
    "2017-11-07 09:30",
    "2017-11-7 09:30:38",
    "2017-02-30 00:00:00",
    "2017-11-07 25:00:00",
    "1510047038",
    "",
])
def test_parse_click_time_rejects_invalid_time(text):
    with pytest.raises(InvalidRow, match="column 'click_time'"):
        parse_click_time(text)


def test_row_to_click_rejects_is_attributed_2():
    row = {
        "ip": "1", "app": "1", "device": "1", "os": "1", "channel": "1",
        "click_time": "2017-11-07 09:30:38", "is_attributed": "2",
    }

    with pytest.raises(InvalidRow, match="is_attributed"):
        row_to_click(row, "t-1")


def test_read_clicks_reads_whole_sample():
    malformed = []

    clicks = list(read_clicks(SAMPLE, malformed.append))

    assert len(clicks) == 100_000
    assert malformed == []
    assert clicks[0].line_number == 2
    assert clicks[-1].line_number == 100_001
    assert len({click.payload["transaction_id"] for click in clicks}) == 100_000


# Malformed rows


def test_read_clicks_skips_malformed_rows(tmp_path):
    path, lines = cut_sample(tmp_path, 40)
    # lines[0] is the header, so lines[i] is line i + 1 of the file.
    lines[4] = "87540,12,1,13,497,2017-11-07 09:30:38\n"  # line 5: 6 columns
    lines[9] = "not-an-ip" + lines[9][lines[9].index(","):]  # line 10
    lines[19] = lines[19].replace("2017-11-", "2017-13-")  # line 20: month 13
    lines[29] = "\n"  # line 30: blank, skipped without a report
    path.write_text("".join(lines), encoding="utf-8")
    malformed = []

    clicks = list(read_clicks(path, malformed.append))

    assert [row.line_number for row in malformed] == [5, 10, 20]
    assert "expected 8 columns, got 6" in malformed[0].reason
    assert "column 'ip'" in malformed[1].reason
    assert "column 'click_time'" in malformed[2].reason
    assert len(clicks) == 36
    assert {5, 10, 20, 30}.isdisjoint(click.line_number for click in clicks)
    assert clicks[-1].payload["transaction_id"] == "slice-41"


def test_read_clicks_limit_counts_good_rows_only(tmp_path):
    path = write_log(tmp_path, [
        "1,1,1,1,1,2017-11-07 09:30:38,,0",
        "bad row",
        "2,1,1,1,1,2017-11-07 09:30:39,,0",
        "3,1,1,1,1,2017-11-07 09:30:40,,0",
    ])
    malformed = []

    clicks = list(read_clicks(path, malformed.append, limit=2))

    assert [click.line_number for click in clicks] == [2, 4]
    assert [row.line_number for row in malformed] == [3]


def test_read_clicks_rejects_other_header(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("click_id,ip,app\n1,2,3\n", encoding="utf-8")

    with pytest.raises(InvalidLog, match="no column device, os, channel"):
        list(read_clicks(path, lambda row: None))


def test_run_replay_logs_malformed_line_numbers(tmp_path, caplog):
    path = write_log(tmp_path, ["1,1,1,1,1,2017-11-07 99:00:00,,0"])
    caplog.set_level(logging.WARNING, logger="replay")

    summary = run_replay(path, url=f"http://127.0.0.1:{free_port()}", show_progress=False)

    assert summary.malformed_rows == 1
    assert summary.sent == 0
    assert "skipped line 2: column 'click_time'" in caplog.text
    assert summary.exit_status == 0


# Responses and summary


@pytest.mark.parametrize(("status_code", "body", "outcome"), [
    (200, {"fraud_type": "clean", "ts": 5}, "clean"),
    (200, {"fraud_type": "ip_blacklist", "ts": 5}, "ip_blacklist"),
    (200, {"fraud_type": "click_spam", "ts": 5}, "click_spam"),
    (200, {"fraud_type": "unknown", "ts": 5}, sender.UNEXPECTED_RESPONSE),
    (200, None, sender.UNEXPECTED_RESPONSE),
    (200, ["clean"], sender.UNEXPECTED_RESPONSE),
    (302, None, sender.UNEXPECTED_RESPONSE),
    (400, {"error": "Field 'ip' is missing."}, sender.HTTP_4XX),
    (413, None, sender.HTTP_4XX),
    (500, None, sender.HTTP_5XX),
    (503, {"error": "Redis is unavailable."}, sender.HTTP_5XX),
])
def test_classify_response_outcome(status_code, body, outcome):
    assert classify_response(status_code, body, 5)[0] == outcome


def test_classify_response_keeps_error_message():
    outcome, detail, _ = classify_response(400, {"error": "Field 'ip' is missing."}, 5)

    assert detail == "HTTP 400: Field 'ip' is missing."


def test_classify_response_detects_replaced_ts():
    assert classify_response(200, {"fraud_type": "clean", "ts": 5}, 5)[2] is False
    assert classify_response(200, {"fraud_type": "clean", "ts": 6}, 5)[2] is True
    assert classify_response(200, {"fraud_type": "clean", "ts": 6}, None)[2] is False


def test_latency_percentiles_nearest_rank():
    latencies_sec = [index / 1000 for index in range(1, 101)]  # 1 ms to 100 ms

    percentiles = latency_percentiles_ms(latencies_sec)

    assert percentiles == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}


def test_summary_exit_status():
    tally = ReplayTally()
    tally.add_result(RequestResult(2, "clean", 200, 0.01))
    tally.add_malformed_row()
    assert tally.summarise(1.0).exit_status == 0

    tally.add_result(RequestResult(3, sender.HTTP_5XX, 503, 0.01, "HTTP 503"))
    summary = tally.summarise(1.0)

    assert summary.exit_status == 1
    assert summary.sent == 2
    assert summary.accepted == 1
    assert summary.errors[sender.HTTP_5XX] == 1
    assert summary.events_per_second == 2.0


# Sender against a stub server


class StubHandler(http.server.BaseHTTPRequestHandler):
    """Responds by line number: 503 for multiples of 5, 400 for multiples of 7, else 200."""

    protocol_version = "HTTP/1.1"  # keep-alive
    delay_lines = {}  # line number -> seconds to wait before responding

    def do_POST(self):
        click = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        line_number = int(click["transaction_id"].rsplit("-", 1)[1])
        self.server.connections.add(self.client_address)
        time.sleep(self.delay_lines.get(line_number, 0))

        if line_number % 5 == 0:
            status, body = 503, {"error": "Redis is unavailable."}
        elif line_number % 7 == 0:
            status, body = 400, {"error": "Field 'ip' is invalid."}
        else:
            status, body = 200, {"status": "clean", "fraud_type": "clean", "ts": click["ts"]}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def stub_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StubHandler)
    server.daemon_threads = True
    server.connections = set()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def make_clicks(line_numbers):
    return [
        LogClick(line, {"device_id": "d", "ip": "1.2.3.4", "transaction_id": f"t-{line}", "ts": 1})
        for line in line_numbers
    ]


def test_send_clicks_counts_each_status(stub_server):
    url = f"http://127.0.0.1:{stub_server.server_address[1]}/"
    tally = ReplayTally()

    send_clicks(make_clicks(range(1, 36)), url, tally.add_result, concurrency=3, timeout_sec=5)
    summary = tally.summarise(1.0)

    assert summary.sent == 35
    assert summary.errors[sender.HTTP_5XX] == 7  # 5, 10, ..., 35
    assert summary.errors[sender.HTTP_4XX] == 4  # 7, 14, 21, 28
    assert summary.fraud_types["clean"] == 24
    assert summary.ts_replaced == 0


def test_send_clicks_keeps_connections_alive(stub_server):
    url = f"http://127.0.0.1:{stub_server.server_address[1]}/"
    tally = ReplayTally()

    send_clicks(make_clicks([1, 2, 3, 4, 6, 8, 9, 11] * 5), url, tally.add_result, concurrency=2)

    assert tally.summarise(1.0).fraud_types["clean"] == 40
    assert len(stub_server.connections) <= 2


def test_send_clicks_reports_timeout(stub_server, monkeypatch):
    monkeypatch.setattr(StubHandler, "delay_lines", {2: 1.0})
    url = f"http://127.0.0.1:{stub_server.server_address[1]}/"
    results = []

    send_clicks(make_clicks([1, 2, 3]), url, results.append, concurrency=1, timeout_sec=0.2)

    outcomes = {result.line_number: result.outcome for result in results}
    assert outcomes == {1: "clean", 2: sender.TIMEOUT, 3: "clean"}


def test_send_clicks_reports_connection_error():
    results = []

    send_clicks(make_clicks([1, 2]), f"http://127.0.0.1:{free_port()}/", results.append)

    assert [result.outcome for result in results] == [sender.CONNECTION] * 2
    assert all(result.status_code is None for result in results)


def test_run_replay_stops_after_max_errors(tmp_path):
    path, _ = cut_sample(tmp_path, 200)

    summary = run_replay(
        path, url=f"http://127.0.0.1:{free_port()}", concurrency=2, max_errors=10,
        show_progress=False,
    )

    assert summary.stopped_early is True
    assert 10 <= summary.errors[sender.CONNECTION] < 200
    assert summary.exit_status == 1


# End to end against app.py


def start_service(tmp_path, name, extra_env):
    """Start `app.py` on free ports with its embedded Redis and wait until /readyz is 200."""
    port, redis_port = free_port(), free_port()
    env = {
        key: value for key, value in os.environ.items()
        if key not in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "TRUST_CLIENT_TS")
    }
    env.update(PORT=str(port), EMBEDDED_REDIS_PORT=str(redis_port), **extra_env)
    log_path = tmp_path / f"{name}.log"
    log_file = open(log_path, "w", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "app.py")],
        cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    deadline = time.monotonic() + SERVICE_START_TIMEOUT_SEC
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, log_file, url, redis_port
        except requests.RequestException:
            pass
        time.sleep(0.2)

    stop_service(process, log_file)
    pytest.fail(f"app.py did not become ready at {url}:\n{log_path.read_text()[-2000:]}")


def stop_service(process, log_file):
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    log_file.close()


@pytest.fixture
def service(tmp_path):
    """app.py with the default settings: it checks clicks at its own time."""
    process, log_file, url, _ = start_service(tmp_path, "service", {})
    yield url
    stop_service(process, log_file)


@pytest.fixture
def trusting_service(tmp_path):
    """app.py with TRUST_CLIENT_TS=1, and a client of its embedded Redis."""
    process, log_file, url, redis_port = start_service(
        tmp_path, "trusting-service", {"TRUST_CLIENT_TS": "1"}
    )
    client = redis.Redis(port=redis_port, decode_responses=True)
    yield url, client
    client.close()
    stop_service(process, log_file)


def run_replay_command(path, url, *options):
    completed = subprocess.run(
        [sys.executable, REPLAY, str(path), "--url", url, "--json", "--no-progress", *options],
        capture_output=True, text=True, timeout=REPLAY_TIMEOUT_SEC, cwd=ROOT,
    )
    return completed, json.loads(completed.stdout) if completed.stdout else None


def test_replay_sample_slice_end_to_end(tmp_path, service):
    path, lines = cut_sample(tmp_path, 300)
    lines[3] = "87540,12,1\n"  # line 4
    lines[100] = "87540,12,1,13,497,2017-11-31 09:30:38,,0\n"  # line 101: no 31 November
    path.write_text("".join(lines), encoding="utf-8")

    completed, summary = run_replay_command(path, service, "--concurrency", "4")

    assert completed.returncode == 0, completed.stderr
    assert summary["sent"] == 298
    assert summary["accepted"] == 298
    assert sum(summary["fraud_types"].values()) == 298
    assert summary["error_total"] == 0
    assert summary["malformed_rows"] == 2
    assert summary["ts_replaced"] == 298
    assert "skipped line 4:" in completed.stderr
    assert "skipped line 101:" in completed.stderr
    assert summary["events_per_second"] > 0


def test_replay_counts_each_fraud_type(tmp_path, trusting_service):
    url, redis_client = trusting_service
    redis_client.execute_command("CF.ADD", "ip_cf", "0.0.0.7")
    path = write_log(tmp_path, [
        # Code 7 is 0.0.0.7, the blacklisted address.
        "7,1,1,1,1,2017-11-07 10:00:00,,0",
        "7,1,2,1,1,2017-11-07 11:00:00,,0",
        # Five clicks of device 9-1-1 within 4 s: with a threshold of 2
        # clicks in 10 s, the first two are clean and the rest are spam.
        "9,1,1,1,1,2017-11-07 12:00:00,,0",
        "9,1,1,1,1,2017-11-07 12:00:01,,0",
        "9,1,1,1,1,2017-11-07 12:00:02,,0",
        "9,1,1,1,1,2017-11-07 12:00:03,,0",
        "9,1,1,1,1,2017-11-07 12:00:04,,1",
        # The same device 20 s later is outside the window again.
        "9,1,1,1,1,2017-11-07 12:00:24,,0",
    ])

    completed, summary = run_replay_command(path, url, "--concurrency", "1")

    assert completed.returncode == 0, completed.stderr
    assert summary["fraud_types"] == {"clean": 3, "ip_blacklist": 2, "click_spam": 3}
    assert summary["ts_replaced"] == 0


def test_replay_without_service_exits_1(tmp_path):
    path, _ = cut_sample(tmp_path, 5)

    completed, summary = run_replay_command(path, f"http://127.0.0.1:{free_port()}")

    assert completed.returncode == 1
    assert summary["errors"]["connection"] == 5
    assert summary["accepted"] == 0


def test_replay_missing_file_exits_2(tmp_path):
    completed, summary = run_replay_command(tmp_path / "missing.csv", "http://127.0.0.1:1")

    assert completed.returncode == 2
    assert summary is None
    assert "cannot replay" in completed.stderr
