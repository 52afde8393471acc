"""Helpers that run the real service and consumer as subprocesses, and drive load."""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.client import HTTPConnection

import constants
import keys
from tests.conftest import ROOT

START_TIMEOUT_SEC = 20


def service_env(port, redis_url=None, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    env.update(HOST="127.0.0.1", WEB_CONCURRENCY="2")
    if port:
        env["PORT"] = str(port)
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update({name: str(value) for name, value in extra.items()})
    return env


class ServiceProcess:
    """The service under gunicorn, or the consumer, as a subprocess with a log file."""

    def __init__(self, command, env, log_path):
        self.command = command
        self.env = env
        self.log_path = log_path
        self.process = None

    @classmethod
    def gunicorn(cls, port, log_path, redis_url=None, **extra):
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"]
        return cls(command, service_env(port, redis_url, **extra), log_path)

    @classmethod
    def consumer(cls, redis_url, log_path, **extra):
        return cls([sys.executable, "consumer.py"], service_env(0, redis_url, **extra), log_path)

    def start(self, health_port=None):
        with open(self.log_path, "a", encoding="utf-8") as log:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        if health_port is not None:
            try:
                self.wait_healthy(health_port)
            except RuntimeError:
                self.stop(kill=True)
                raise
        return self

    def wait_healthy(self, port):
        deadline = time.monotonic() + START_TIMEOUT_SEC
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited: {self.log()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                return
            except OSError:  # URLError, refused connections and timeouts
                time.sleep(0.1)
        raise RuntimeError(f"service did not start within {START_TIMEOUT_SEC} s: {self.log()}")

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return log.read()

    def stop(self, kill=False):
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


class LoadResult:
    """Outcome counts of a load run, filled by several threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.statuses = {}  # HTTP status, or "connection_error" -> count
        self.max_latency = 0.0
        self.sent = 0
        self.accepted_ids = set()  # transaction ids that got a 200 response

    def record(self, status, latency, transaction_id):
        with self.lock:
            if status == 200:
                self.accepted_ids.add(transaction_id)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.max_latency = max(self.max_latency, latency)
            self.sent += 1


def post_clicks(port, result, stop_event, worker, max_clicks, timeout_sec=10.0):
    """Send clicks over one keep-alive connection until `stop_event` or `max_clicks`."""
    connection = HTTPConnection("127.0.0.1", port, timeout=timeout_sec)
    for i in range(max_clicks):
        if stop_event.is_set():
            break
        transaction_id = f"w{worker}-{i}"
        body = json.dumps({"device_id": f"w{worker}-d{i % 50}", "ip": "192.0.2.1",
                           "transaction_id": transaction_id})
        started = time.monotonic()
        try:
            connection.request("POST", "/", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            status = response.status
        except (OSError, ConnectionError):
            status = "connection_error"
            connection.close()
            connection = HTTPConnection("127.0.0.1", port, timeout=timeout_sec)
            time.sleep(0.05)
        result.record(status, time.monotonic() - started, transaction_id)
        time.sleep(0.005)
    connection.close()


class SteadyLoad:
    """A few threads posting clicks until stopped; bounded by a click count."""

    def __init__(self, port, threads=4, max_clicks_per_thread=5000):
        self.result = LoadResult()
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(target=post_clicks,
                             args=(port, self.result, self.stop_event, n, max_clicks_per_thread),
                             daemon=True)
            for n in range(threads)
        ]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self.result

    def __exit__(self, *exc_info):
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=30)


def series_totals(client):
    """Return the number of counted events per fraud type."""
    totals = {}
    for fraud_type in constants.FRAUD_TYPES:
        samples = client.ts().range(keys.event_series(fraud_type), "-", "+")
        totals[fraud_type] = int(sum(value for _, value in samples))
    return totals


def wait_for_count(client, expected, limit_sec=15.0):
    """Wait until the counters hold `expected` events; return the last total seen."""
    deadline = time.monotonic() + limit_sec
    total = 0
    while time.monotonic() < deadline:
        total = sum(series_totals(client).values())
        if total >= expected:
            time.sleep(0.3)  # a second look catches any over-count
            return sum(series_totals(client).values())
        time.sleep(0.1)
    return total


def stream_transaction_ids(client, stream_key=constants.STREAM_KEY):
    """Return the transaction ids of every entry in the stream."""
    return {fields.get("transaction_id") for _, fields in client.xrange(stream_key)}


# Variables of the test runner that would change what an embedded service does.
RUNNER_VARIABLES = ("TRUST_CLIENT_TS", "CLICK_SPAM_THRESHOLD", "CLICK_SPAM_WINDOW_IN_SEC",
                    "STREAM_CONSUMER", "PROMETHEUS_MULTIPROC_DIR")


def start_embedded_gunicorn(log_path, **extra):
    """Start gunicorn with two workers and the embedded Redis, and wait until it is healthy.

    `extra` sets environment variables of the service. Returns (service,
    port, redis_port), where redis_port is the port of the embedded server.
    """
    from tools.redis_stack import free_port

    port, redis_port = free_port(), free_port()
    settings = {"EMBEDDED_REDIS_PORT": redis_port, "CONSUMER_BLOCK_MS": 100, **extra}
    service = ServiceProcess.gunicorn(port, log_path, **settings)
    for name in RUNNER_VARIABLES:
        if name not in extra:
            service.env.pop(name, None)
    return service.start(health_port=port), port, redis_port
