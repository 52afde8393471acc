"""Tests of /metrics: request counters, stream gauges, Redis outages and gunicorn workers.

The counters live in the default registry of the test process, which every
app of the session shares, so the unit tests compare a scrape before and
after the requests. The end-to-end test runs the real service under gunicorn
with two workers and compares /metrics with the summary of `replay.py`.
"""

import itertools
import json
import os
import re
import subprocess
import sys
import time

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

import metrics
import metrics_dir
from app import create_app
from clickreplay.talkingdata import parse_ip
from config import ConfigError, Settings
from consumer import StreamWorker
from redis_conn import connect
from tests.conftest import DATA_DIR, ROOT, make_app, post_click
from tests.processes import start_embedded_gunicorn
from tools.redis_stack import RedisStackServer, free_port

SAMPLE = os.path.join(DATA_DIR, "talkingdata_train_sample.csv")
REPLAY_TIMEOUT_SEC = 120
TIMEOUT_SEC = 0.3  # Redis timeout of the outage tests
METRICS_DIR_LINE = re.compile(r"Workers keep their Prometheus metrics in (\S+)")


def scrape(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def sample_sum(text, name, **labels):
    """Return the sum of the samples named `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def has_sample(text, name):
    return any(
        sample.name == name
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )


# Counters in the request path


def test_clicks_counted_by_fraud_type(client):
    before = scrape(client)

    for i in range(3):
        assert post_click(client, transaction_id=f"tx-{i}").status_code == 200
    after = scrape(client)

    name = "fraud_detector_clicks_total"
    assert sample_sum(after, name, endpoint="/", fraud_type="clean") \
        - sample_sum(before, name, endpoint="/", fraud_type="clean") == 2
    assert sample_sum(after, name, endpoint="/", fraud_type="click_spam") \
        - sample_sum(before, name, endpoint="/", fraud_type="click_spam") == 1


def test_batch_counts_each_click(client):
    clicks = [
        {"device_id": "batch-device", "ip": "198.51.100.7", "transaction_id": f"tx-{i}"}
        for i in range(3)
    ]
    clicks.append({"device_id": "", "ip": "198.51.100.7", "transaction_id": "tx-bad"})
    before = scrape(client)

    response = client.post("/batch", json=clicks)
    after = scrape(client)

    assert response.status_code == 200
    checked = "fraud_detector_clicks_total"
    rejected = "fraud_detector_rejected_clicks_total"
    assert sample_sum(after, checked, endpoint="/batch", fraud_type="clean") \
        - sample_sum(before, checked, endpoint="/batch", fraud_type="clean") == 2
    assert sample_sum(after, checked, endpoint="/batch", fraud_type="click_spam") \
        - sample_sum(before, checked, endpoint="/batch", fraud_type="click_spam") == 1
    assert sample_sum(after, rejected, endpoint="/batch", reason="invalid_field", status="200") \
        - sample_sum(before, rejected, endpoint="/batch", reason="invalid_field", status="200") == 1


@pytest.mark.parametrize("body, content_type, reason, status", [
    (b"{not json", "application/json", "bad_request", "400"),
    (b'{"ip": "198.51.100.7", "transaction_id": "t"}', "application/json", "invalid_field", "400"),
    (b"device_id=d", "application/x-www-form-urlencoded", "unsupported_media_type", "415"),
])
def test_rejected_click_counted_by_reason(client, body, content_type, reason, status):
    name = "fraud_detector_rejected_clicks_total"
    before = scrape(client)

    response = client.post("/", data=body, content_type=content_type)
    after = scrape(client)

    assert str(response.status_code) == status
    assert sample_sum(after, name, endpoint="/", reason=reason, status=status) \
        - sample_sum(before, name, endpoint="/", reason=reason, status=status) == 1


def test_request_counted_with_latency(client):
    before = scrape(client)

    post_click(client)
    after = scrape(client)

    requests_total = "fraud_detector_http_requests_total"
    latency_count = "fraud_detector_http_request_duration_seconds_count"
    assert sample_sum(after, requests_total, endpoint="/", method="POST", status="200") \
        - sample_sum(before, requests_total, endpoint="/", method="POST", status="200") == 1
    assert sample_sum(after, latency_count, endpoint="/") \
        - sample_sum(before, latency_count, endpoint="/") == 1


def test_unknown_path_has_bounded_label(client):
    before = scrape(client)

    client.get("/no/such/path/42")
    after = scrape(client)

    name = "fraud_detector_http_requests_total"
    assert sample_sum(after, name, endpoint="unmatched", status="404") \
        - sample_sum(before, name, endpoint="unmatched", status="404") == 1
    assert "/no/such/path/42" not in after


def test_openmetrics_format_on_request(client):
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})

    assert response.status_code == 200
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).endswith("# EOF\n")


# Stream gauges, read at scrape time


def test_stream_gauges_follow_consumer(client, redis_client, settings):
    for i in range(3):
        post_click(client, device_id=f"gauge-{i}")

    before_consumer = scrape(client)
    StreamWorker(redis_client, settings, name="test-worker").drain()
    after_consumer = scrape(client)

    group = {"stream": "data_stream", "group": "fraud-consumers"}
    assert sample_sum(before_consumer, "fraud_detector_redis_up") == 1
    assert sample_sum(before_consumer, "fraud_detector_stream_length", stream="data_stream") == 3
    assert sample_sum(before_consumer, "fraud_detector_consumer_group_lag", **group) == 3
    assert sample_sum(after_consumer, "fraud_detector_consumer_group_lag", **group) == 0
    assert sample_sum(after_consumer, "fraud_detector_consumer_group_pending", **group) == 0
    assert sample_sum(after_consumer, "fraud_detector_stream_length", stream="data_stream") == 3


def test_pending_entries_of_stalled_consumer(client, redis_client):
    post_click(client, device_id="pending-1")
    post_click(client, device_id="pending-2")

    redis_client.xreadgroup("fraud-consumers", "stalled", {"data_stream": ">"}, count=10)
    text = scrape(client)

    group = {"stream": "data_stream", "group": "fraud-consumers"}
    assert sample_sum(text, "fraud_detector_consumer_group_pending", **group) == 2
    assert sample_sum(text, "fraud_detector_consumer_group_lag", **group) == 0


def test_missing_stream_reads_as_empty(client, redis_client):
    redis_client.delete("data_stream")

    text = scrape(client)

    assert sample_sum(text, "fraud_detector_redis_up") == 1
    assert sample_sum(text, "fraud_detector_stream_length", stream="data_stream") == 0
    assert not has_sample(text, "fraud_detector_consumer_group_pending")


# Redis outages


def test_scrape_succeeds_without_redis(settings):
    dead_client = connect(f"redis://127.0.0.1:{free_port()}/0", TIMEOUT_SEC)
    app = make_app(dead_client, settings)
    client = app.test_client()
    before = scrape(client)

    click = post_click(client)
    after = scrape(client)

    assert click.status_code == 503
    assert sample_sum(after, "fraud_detector_redis_up") == 0
    assert not has_sample(after, "fraud_detector_stream_length")
    assert sample_sum(after, "fraud_detector_redis_errors_total", kind="unavailable") \
        - sample_sum(before, "fraud_detector_redis_errors_total", kind="unavailable") == 1
    rejected = {"endpoint": "/", "reason": "redis_unavailable", "status": "503"}
    assert sample_sum(after, "fraud_detector_rejected_clicks_total", **rejected) \
        - sample_sum(before, "fraud_detector_rejected_clicks_total", **rejected) == 1


@pytest.fixture
def paused_server_app():
    server = RedisStackServer(gears=False).start()
    settings = Settings(redis_url=server.url, redis_timeout_sec=TIMEOUT_SEC, stream_consumer="worker")
    app = create_app(settings=settings, client=connect(server.url, TIMEOUT_SEC), start_consumer=False)
    yield server, app.test_client()
    server.stop()


def test_scrape_during_paused_redis_is_fast(paused_server_app):
    server, client = paused_server_app
    assert post_click(client).status_code == 200
    before = scrape(client)

    server.pause()
    try:
        started = time.monotonic()
        during = scrape(client)
        elapsed = time.monotonic() - started
        click = post_click(client, transaction_id="during")
        after_click = scrape(client)
    finally:
        server.resume()
    recovered = scrape(client)

    assert sample_sum(during, "fraud_detector_redis_up") == 0
    assert elapsed < 4 * TIMEOUT_SEC
    assert click.status_code == 503
    assert sample_sum(after_click, "fraud_detector_redis_errors_total", kind="timeout") \
        - sample_sum(before, "fraud_detector_redis_errors_total", kind="timeout") == 1
    assert sample_sum(recovered, "fraud_detector_redis_up") == 1
    assert sample_sum(recovered, "fraud_detector_stream_length", stream="data_stream") == 1


def test_batch_failure_counts_its_clicks(settings):
    dead_client = connect(f"redis://127.0.0.1:{free_port()}/0", TIMEOUT_SEC)
    app = make_app(dead_client, settings)
    # Set-up runs before every click request while Redis is down, so mark it
    # done to reach the check script of the batch itself.
    app.extensions["fraud_detector"].consumer_kind = "worker"
    client = app.test_client()
    clicks = [{"device_id": f"d{i}", "ip": "198.51.100.7", "transaction_id": "t"} for i in range(4)]
    clicks.append({"device_id": "d5"})
    before = scrape(client)

    response = client.post("/batch", json=clicks)
    after = scrape(client)

    name = "fraud_detector_rejected_clicks_total"
    assert response.status_code == 503
    assert sample_sum(after, name, endpoint="/batch", reason="redis_unavailable", status="503") \
        - sample_sum(before, name, endpoint="/batch", reason="redis_unavailable", status="503") == 4
    assert sample_sum(after, name, endpoint="/batch", reason="invalid_field", status="503") \
        - sample_sum(before, name, endpoint="/batch", reason="invalid_field", status="503") == 1


# Multiprocess set-up


def test_multiprocess_folder_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))

    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR must be an existing folder"):
        metrics.multiprocess_enabled()


def test_multiprocess_setting_changed_after_import(monkeypatch, tmp_path):
    # Flip the variable relative to how prometheus_client was imported.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    else:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    with pytest.raises(ConfigError, match="before the process starts"):
        metrics.multiprocess_enabled()


def test_prepare_empties_given_folder(tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_123.db").write_bytes(b"old")
    (folder / "notes.txt").write_text("kept")
    environ = {"PROMETHEUS_MULTIPROC_DIR": str(folder)}

    path, temporary = metrics_dir.prepare(environ)

    assert path == str(folder)
    assert temporary is False
    assert not (folder / "counter_123.db").exists()
    assert (folder / "notes.txt").exists()


def test_prepare_creates_missing_folder(tmp_path):
    folder = tmp_path / "new" / "metrics"

    path, temporary = metrics_dir.prepare({"PROMETHEUS_MULTIPROC_DIR": str(folder)})

    assert folder.is_dir()
    assert temporary is False


def test_prepare_without_variable_makes_temporary_folder():
    environ = {}

    path, temporary = metrics_dir.prepare(environ)
    try:
        assert temporary is True
        assert environ["PROMETHEUS_MULTIPROC_DIR"] == path
        assert os.path.isdir(path)
    finally:
        metrics_dir.remove(path)
    assert not os.path.exists(path)


# The real service under gunicorn


def cut_sample(tmp_path, data_rows):
    with open(SAMPLE, encoding="utf-8") as sample:
        lines = list(itertools.islice(sample, data_rows + 1))
    path = tmp_path / "slice.csv"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def scrape_url(url):
    response = requests.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200
    return response.text


def logged_metrics_dir(service):
    """Return the PROMETHEUS_MULTIPROC_DIR folder that the gunicorn master logged."""
    match = METRICS_DIR_LINE.search(service.log())
    assert match, service.log()
    return match.group(1)


def test_replay_summary_equals_metrics_under_gunicorn(tmp_path):
    # Clicks are checked at their logged times, with a window over the whole
    # sample and a threshold of 1, so every repeated device is spam.
    service, port, redis_port = start_embedded_gunicorn(
        tmp_path / "service.log",
        TRUST_CLIENT_TS=1, CLICK_SPAM_THRESHOLD=1, CLICK_SPAM_WINDOW_IN_SEC=259200,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        path = cut_sample(tmp_path, 1000)
        embedded = redis.Redis(port=redis_port, decode_responses=True)
        for code in ("5314", "95766"):  # the most frequent ip codes of the first 1000 rows
            embedded.execute_command("CF.ADDNX", "ip_cf", str(parse_ip(code)))
        embedded.close()

        completed = subprocess.run(
            [sys.executable, os.path.join(ROOT, "replay.py"), str(path), "--url", url,
             "--json", "--no-progress", "--concurrency", "8"],
            capture_output=True, text=True, timeout=REPLAY_TIMEOUT_SEC, cwd=ROOT,
        )
        summary = json.loads(completed.stdout)
        scrapes = [scrape_url(url) for _ in range(6)]
        folder = logged_metrics_dir(service)
        worker_files = [name for name in os.listdir(folder) if name.startswith("counter_")]
    finally:
        service.stop()

    assert completed.returncode == 0, completed.stderr
    assert summary["sent"] == 1000
    assert all(count > 0 for count in summary["fraud_types"].values()), summary
    assert len(worker_files) == 2, worker_files
    for text in scrapes:
        for fraud_type, count in summary["fraud_types"].items():
            assert sample_sum(text, "fraud_detector_clicks_total",
                              endpoint="/", fraud_type=fraud_type) == count, fraud_type
        assert sample_sum(text, "fraud_detector_http_requests_total",
                          endpoint="/", method="POST") == summary["sent"]
        assert sample_sum(text, "fraud_detector_rejected_clicks_total") == summary["error_total"]
        assert sample_sum(text, "fraud_detector_stream_length") == summary["accepted"]
    assert not os.path.exists(folder)


def test_gunicorn_uses_given_metrics_folder(tmp_path):
    folder = tmp_path / "prometheus"
    service, port, _ = start_embedded_gunicorn(tmp_path / "service.log",
                                               PROMETHEUS_MULTIPROC_DIR=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        response = requests.post(
            url, json={"device_id": "d", "ip": "192.0.2.1", "transaction_id": "t"}, timeout=5
        )
        text = scrape_url(url)
    finally:
        service.stop()

    assert response.status_code == 200
    assert sample_sum(text, "fraud_detector_clicks_total", endpoint="/", fraud_type="clean") == 1
    assert any(name.startswith("counter_") for name in os.listdir(folder))
