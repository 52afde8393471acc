"""The embedded default: `python app.py` and gunicorn with no Redis configured."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import redis

import keys
from tests.conftest import ROOT
from tools.redis_stack import free_port

EMBEDDED_LINE = re.compile(r"embedded fakeredis server on 127\.0\.0\.1:(\d+)")
START_TIMEOUT_SEC = 20


def service_env(port):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    env.update(PORT=str(port), HOST="127.0.0.1", WEB_CONCURRENCY="2", CONSUMER_BLOCK_MS="100")
    return env


def post(port, click, accept="application/json"):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/",
        data=json.dumps(click).encode(),
        headers={"Content-Type": "application/json", "Accept": accept},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


def read(path):
    with open(path, encoding="utf-8") as log:
        return log.read()


def start(command, port, log_path):
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=service_env(port), stdout=log,
                                   stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_SEC
    while time.monotonic() < deadline:
        assert process.poll() is None, read(log_path)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
            break
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail(f"service did not start: {read(log_path)}")
    match = EMBEDDED_LINE.search(read(log_path))
    assert match, read(log_path)
    return process, int(match.group(1))


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def wait_for_total(client, fraud_type, expected, limit_sec=5.0):
    deadline = time.monotonic() + limit_sec
    total = 0
    while time.monotonic() < deadline:
        samples = client.ts().range(keys.event_series(fraud_type), "-", "+")
        total = int(sum(value for _, value in samples))
        if total >= expected:
            break
        time.sleep(0.1)
    return total


@pytest.mark.parametrize("server", ["flask", "gunicorn"])
def test_embedded_service_end_to_end(server, tmp_path):
    port = free_port()
    command = [sys.executable, "app.py"]
    if server == "gunicorn":
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"]
    process, redis_port = start(command, port, tmp_path / "service.log")
    try:
        client = redis.Redis(port=redis_port, decode_responses=True)
        verdicts = [
            json.loads(post(port, {"device_id": "d1", "ip": "192.0.2.10", "transaction_id": f"t{i}"}))
            for i in range(3)
        ]
        client.execute_command("CF.ADDNX", "ip_cf", "203.0.113.7")
        blacklisted = post(port, {"device_id": "d2", "ip": "203.0.113.7", "transaction_id": "t9"},
                           accept="text/plain")

        assert [v["fraud_type"] for v in verdicts] == ["clean", "clean", "click_spam"]
        assert blacklisted == "ip_blacklist"
        assert wait_for_total(client, "clean", 2) == 2
        assert wait_for_total(client, "click_spam", 1) == 1
        assert wait_for_total(client, "ip_blacklist", 1) == 1
    finally:
        client.close()
        stop(process)

    log = (tmp_path / "service.log").read_text()
    assert "Nothing is persisted" in log
