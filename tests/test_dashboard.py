"""Tests of /dashboard: the JSON it polls, its assets, and the page in headless Chromium.

The browser test needs Debian's `chromium` and the npm packages of
package-lock.json, which `tools/install_test_deps.sh` installs.
"""

import re
import shutil
import subprocess
import threading
import time

import pytest
import redis
import requests

import dashboard
import keys
from redis_conn import connect
from tests.conftest import make_app
from tests.processes import start_embedded_gunicorn
from tools.redis_stack import free_port

INSTALL_HINT = "run tools/install_test_deps.sh"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
)
CHROMIUM_TIMEOUT_SEC = 60
VIRTUAL_TIME_BUDGET_MS = 3000  # page time for the first fetch and drawing
BLACKLISTED_IP = "203.0.113.7"
MAX_CLICKS = 3000  # the sender stops after this many clicks
MAX_SEND_SEC = 60  # or after this many seconds
SEND_PAUSE_SEC = 0.005  # between two clicks, about 150 clicks per second at most


# /dashboard/data


def add_samples(client, fraud_type, samples):
    for timestamp_ms, value in samples:
        client.ts().add(keys.event_series(fraud_type), timestamp_ms, value)


def test_data_sums_samples_per_second(client, redis_client):
    now_sec = int(redis_client.time()[0])
    ten_ago_ms = (now_sec - 10) * 1000
    add_samples(redis_client, "clean", [(ten_ago_ms + 100, 3), (ten_ago_ms + 400, 2),
                                        ((now_sec - 5) * 1000, 1)])
    add_samples(redis_client, "click_spam", [(ten_ago_ms + 500, 4)])
    add_samples(redis_client, "ip_blacklist", [((now_sec - 120) * 1000, 7)])  # before the window

    data = client.get("/dashboard/data?minutes=1").get_json()

    ten_ago_index = (ten_ago_ms - data["start_ms"]) // 1000
    assert len(data["timestamps"]) == 60
    assert data["timestamps"][-1] == data["end_ms"] // 1000 - 1
    assert data["per_second"]["clean"][ten_ago_index] == 5
    assert data["per_second"]["clean"][ten_ago_index + 5] == 1
    assert data["per_second"]["click_spam"][ten_ago_index] == 4
    assert data["totals"] == {"clean": 6, "ip_blacklist": 0, "click_spam": 4}
    assert data["total"] == 10
    assert data["fraud_share"] == pytest.approx(0.4)


def test_data_without_events(client):
    data = client.get("/dashboard/data").get_json()

    assert data["minutes"] == dashboard.DEFAULT_MINUTES
    assert len(data["timestamps"]) == dashboard.DEFAULT_MINUTES * 60
    assert data["total"] == 0
    assert data["fraud_share"] is None


@pytest.mark.parametrize("minutes", ["0", "61", "five", "1.5"])
def test_data_rejects_invalid_minutes(client, minutes):
    response = client.get(f"/dashboard/data?minutes={minutes}")

    assert response.status_code == 400
    assert response.get_json()["field"] == "minutes"
    assert "from 1 to 60" in response.get_json()["message"]


def test_data_without_redis_is_503(settings):
    dead_client = connect(f"redis://127.0.0.1:{free_port()}/0", 0.3)
    client = make_app(dead_client, settings).test_client()

    response = client.get("/dashboard/data")

    assert response.status_code == 503
    assert response.get_json()["error"] == "redis_unavailable"
    assert response.headers["Retry-After"] == "1"


# The page and its assets


def fetch_status(client, path):
    response = client.get(path)
    response.close()  # a file response keeps its file open until closed
    return response.status_code


def test_page_assets_are_served(client):
    page = client.get("/dashboard")
    assets = re.findall(r'(?:src|href)="(/dashboard/[^"]+)"', page.get_data(as_text=True))

    statuses = {asset: fetch_status(client, asset) for asset in assets}

    assert page.status_code == 200
    assert sorted(assets) == [
        "/dashboard/static/dashboard.css", "/dashboard/static/dashboard.js",
        "/dashboard/vendor/uPlot.iife.min.js", "/dashboard/vendor/uPlot.min.css",
    ]
    assert statuses == dict.fromkeys(assets, 200)


def test_missing_library_says_npm_ci(client, monkeypatch, tmp_path):
    monkeypatch.setattr(dashboard, "UPLOT_DIST", str(tmp_path))

    response = client.get("/dashboard/vendor/uPlot.iife.min.js")

    assert response.status_code == 500
    assert response.get_json()["error"] == "dashboard_library_missing"
    assert "npm ci" in response.get_json()["message"]


def test_vendor_rejects_other_files(client):
    response = client.get("/dashboard/vendor/package.json")

    assert response.status_code == 404


# The page in headless Chromium, with clicks flowing into the real service


class ClickSender(threading.Thread):
    """Posts clicks of a few devices, some from a blacklisted address, until stopped.

    It stops by itself after MAX_CLICKS clicks or MAX_SEND_SEC seconds.
    """

    def __init__(self, url):
        super().__init__(name="click-sender", daemon=True)
        self.url = url
        self.stop_event = threading.Event()
        self.sent = 0
        self.failures = []

    def run(self):
        deadline = time.monotonic() + MAX_SEND_SEC
        with requests.Session() as session:
            while self.sent < MAX_CLICKS and time.monotonic() < deadline:
                if self.stop_event.is_set():
                    break
                ip = BLACKLISTED_IP if self.sent % 7 == 0 else "198.51.100.7"
                click = {"device_id": f"device-{self.sent % 40}", "ip": ip,
                         "transaction_id": f"tx-{self.sent}"}
                response = session.post(self.url, json=click, timeout=5)
                if response.status_code != 200:
                    self.failures.append(response.text)
                self.sent += 1
                time.sleep(SEND_PAUSE_SEC)

    def stop(self):
        self.stop_event.set()
        self.join(timeout=10)


def wait_for_every_fraud_type(url, limit_sec=15.0):
    """Return /dashboard/data once every fraud type has events, or the last response."""
    deadline = time.monotonic() + limit_sec
    while True:
        data = requests.get(f"{url}/dashboard/data?minutes=5", timeout=5).json()
        if all(data["totals"].values()) or time.monotonic() > deadline:
            return data
        time.sleep(0.2)


def run_chromium(chromium, profile_dir, *args):
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}",
               f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_SEC)


def element_text(dom, element_id):
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert match, f"no element #{element_id} in the DOM"
    return match.group(1)


def count_in(text):
    return int(text.replace(",", ""))


def test_dashboard_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, f"chromium not found: {INSTALL_HINT}"
    assert not dashboard.missing_vendor_files(), f"uPlot is not installed: {INSTALL_HINT}"
    service, port, redis_port = start_embedded_gunicorn(tmp_path / "service.log")
    url = f"http://127.0.0.1:{port}"
    sender = ClickSender(url)
    screenshot = tmp_path / "dashboard.png"
    try:
        embedded = redis.Redis(port=redis_port, decode_responses=True)
        embedded.execute_command("CF.ADDNX", "ip_cf", BLACKLISTED_IP)
        embedded.close()
        sender.start()
        data = wait_for_every_fraud_type(url)

        dom_run = run_chromium(chromium, tmp_path / "profile-dom", "--dump-dom", f"{url}/dashboard")
        shot_run = run_chromium(chromium, tmp_path / "profile-shot", "--window-size=1280,800",
                                f"--screenshot={screenshot}", f"{url}/dashboard")
    finally:
        sender.stop()
        service.stop()
    dom = dom_run.stdout

    assert sender.failures == []
    assert all(data["totals"].values()), data["totals"]
    assert dom_run.returncode == 0, dom_run.stderr[-2000:]
    assert 'data-state="loaded"' in dom, element_text(dom, "status")
    assert count_in(element_text(dom, "total")) > 0
    for fraud_type in ("clean", "ip_blacklist", "click_spam"):
        assert count_in(element_text(dom, f"total-{fraud_type}")) > 0, fraud_type
    assert re.fullmatch(r"\d+\.\d %", element_text(dom, "fraud-share"))
    assert re.search(r'id="chart".*<canvas', dom, re.DOTALL)
    assert shot_run.returncode == 0, shot_run.stderr[-2000:]
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    assert screenshot.stat().st_size > 10_000
