"""Prometheus metrics: `GET /metrics` and the request hooks that count clicks.

The counters and the latency histogram change in the request path without any
Redis call. The stream gauges are read from Redis when Prometheus scrapes.

Each gunicorn worker is its own process, so under gunicorn prometheus_client
runs in multiprocess mode. Every worker writes its values to files in
`PROMETHEUS_MULTIPROC_DIR`, and a scrape served by any worker adds up the
files of all workers, dead ones included. `gunicorn.conf.py` creates that
folder and sets the variable before the app is imported, because
prometheus_client chooses the mode when it is imported. Without the variable
(`python app.py`, one process) the metrics live in the default registry.
"""

import collections
import logging
import os
import time

import redis
from flask import Blueprint, current_app, g, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from config import ConfigError
from fraud_checks import RequestExpired

logger = logging.getLogger(__name__)

blueprint = Blueprint("metrics", __name__)

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CLICK_ENDPOINTS = ("/", "/batch")  # URL rules whose POST requests carry clicks
UNMATCHED = "unmatched"  # endpoint label of a request that matched no route (404, 405)
LATENCY_BUCKETS_SEC = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

CLICKS = Counter(
    "fraud_detector_clicks_total",
    "Clicks checked and recorded, by endpoint and fraud type. Each click of a batch counts once.",
    ["endpoint", "fraud_type"],
)
REJECTED_CLICKS = Counter(
    "fraud_detector_rejected_clicks_total",
    "Clicks that got no verdict, by endpoint, reason (the error field of the response) and "
    "HTTP status. An invalid click of a batch counts once, with the status of the batch.",
    ["endpoint", "reason", "status"],
)
REQUESTS = Counter(
    "fraud_detector_http_requests_total",
    "HTTP requests, by endpoint (the URL rule), method and status.",
    ["endpoint", "method", "status"],
)
REQUEST_DURATION = Histogram(
    "fraud_detector_http_request_duration_seconds",
    "Request latency inside the service, from the first before_request hook to the "
    "after_request hooks, by endpoint.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS_SEC,
)
REDIS_ERRORS = Counter(
    "fraud_detector_redis_errors_total",
    "Redis errors that failed a request, by kind: unavailable (connection failed), "
    "timeout (no reply in time) or other (an error reply).",
    ["kind"],
)


def init_app(app):
    """Serve `/metrics` and install the hooks that count requests.

    Call it after `app.extensions["fraud_detector"]` is set and before the
    other `before_request` hooks, so that the latency covers them.

    Raises:
        ConfigError: PROMETHEUS_MULTIPROC_DIR is not a folder, or it was set
            after prometheus_client had been imported.
    """
    service = app.extensions["fraud_detector"]
    registry = CollectorRegistry()
    if multiprocess_enabled():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(DefaultRegistryCollector())
    registry.register(StreamCollector(service.client, service.settings.stream_key))
    app.extensions["metrics_registry"] = registry

    app.register_blueprint(blueprint)
    app.before_request(start_timer)
    app.after_request(count_request)


def multiprocess_enabled():
    """Return True when PROMETHEUS_MULTIPROC_DIR is set and matches how prometheus_client stores values."""
    folder = os.environ.get(MULTIPROC_DIR_VARIABLE)
    stores_in_files = getattr(values.ValueClass, "_multiprocess", False)
    if folder and not os.path.isdir(folder):
        raise ConfigError(
            f"{MULTIPROC_DIR_VARIABLE} must be an existing folder, got {folder!r}: "
            "create it, or unset the variable when the service runs as one process"
        )
    if bool(folder) != stores_in_files:
        raise ConfigError(
            f"{MULTIPROC_DIR_VARIABLE} must be set or unset before the process starts: "
            "prometheus_client was imported with the other setting"
        )
    return bool(folder)


@blueprint.get("/metrics")
def metrics():
    """Render every metric in the format that the Accept header requests."""
    encoder, content_type = choose_encoder(request.headers.get("Accept"))
    body = encoder(current_app.extensions["metrics_registry"])
    return body, 200, {"Content-Type": content_type}


def endpoint_label():
    """Return the URL rule of the current request, a label value of bounded cardinality."""
    return request.url_rule.rule if request.url_rule is not None else UNMATCHED


def start_timer():
    g.metrics_started = time.perf_counter()


def count_request(response):
    """Count the finished request: its status, its latency and the clicks it rejected."""
    endpoint = endpoint_label()
    started = g.pop("metrics_started", None)
    if started is not None:
        REQUEST_DURATION.labels(endpoint).observe(time.perf_counter() - started)
    REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()

    if request.method == "POST" and endpoint in CLICK_ENDPOINTS:
        count_rejected_clicks(endpoint, response)
    return response


def count_rejected_clicks(endpoint, response):
    status = str(response.status_code)
    invalid_items = g.pop("metrics_invalid_items", 0)
    if invalid_items:
        REJECTED_CLICKS.labels(endpoint, "invalid_field", status).inc(invalid_items)
    if response.status_code == 200:
        return

    # A request that failed before its body was read counts as one click.
    unchecked = g.pop("metrics_unchecked_clicks", 1)
    if unchecked:
        REJECTED_CLICKS.labels(endpoint, error_reason(response), status).inc(unchecked)


def error_reason(response):
    """Return the `error` field of a JSON error response, or `http_<status>`."""
    body = response.get_json(silent=True) if response.is_json else None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return f"http_{response.status_code}"


def note_batch(valid_clicks, invalid_clicks):
    """Record how many clicks of a POST /batch body are valid and invalid.

    When the batch then fails as a whole, its valid clicks count as rejected
    with the reason and status of the failure.
    """
    g.metrics_unchecked_clicks = valid_clicks
    g.metrics_invalid_items = invalid_clicks


def count_verdicts(verdicts):
    """Count checked clicks by fraud type, for the endpoint of the current request."""
    g.metrics_unchecked_clicks = 0
    endpoint = endpoint_label()
    by_fraud_type = collections.Counter(verdict.fraud_type for verdict in verdicts)
    for fraud_type, count in by_fraud_type.items():
        CLICKS.labels(endpoint, fraud_type).inc(count)


def count_redis_error(error):
    """Count a Redis error that failed a request, by kind."""
    if isinstance(error, (redis.TimeoutError, RequestExpired)):
        kind = "timeout"
    elif isinstance(error, redis.ConnectionError):
        kind = "unavailable"
    else:
        kind = "other"
    REDIS_ERRORS.labels(kind).inc()


class DefaultRegistryCollector:
    """Exposes the default registry of this process inside another registry."""

    def collect(self):
        return REGISTRY.collect()


class StreamCollector:
    """Reads the stream length and the lag and pending entries of its consumer groups.

    It runs at scrape time, in one round trip (XLEN and XINFO GROUPS), with
    the client's timeout and without retries, which `redis_conn.connect` sets.
    When Redis fails, the scrape still succeeds: `fraud_detector_redis_up` is
    0 and the stream gauges are left out.
    """

    def __init__(self, client, stream_key):
        self.client = client
        self.stream_key = stream_key
        self.failing = False  # log a failure once, not on every scrape

    def collect(self):
        redis_up = GaugeMetricFamily(
            "fraud_detector_redis_up",
            "1 when this scrape read the stream from Redis, 0 when Redis failed or timed out.",
        )
        try:
            length, groups = self.read_stream()
        except redis.RedisError as error:
            self.report_failure(error)
            redis_up.add_metric([], 0)
            yield redis_up
            return
        self.report_recovery()
        redis_up.add_metric([], 1)
        yield redis_up
        yield from self.stream_metrics(length, groups)

    def read_stream(self):
        """Return XLEN and XINFO GROUPS of the stream. A missing stream has no groups."""
        pipeline = self.client.pipeline(transaction=False)
        pipeline.xlen(self.stream_key)
        pipeline.xinfo_groups(self.stream_key)
        length, groups = pipeline.execute(raise_on_error=False)
        if isinstance(length, Exception):
            raise length
        if isinstance(groups, redis.ResponseError) and "no such key" in str(groups).lower():
            groups = []
        elif isinstance(groups, Exception):
            raise groups
        return length, groups

    def stream_metrics(self, length, groups):
        stream_length = GaugeMetricFamily(
            "fraud_detector_stream_length", "Entries in the stream of checked clicks (XLEN).",
            labels=["stream"],
        )
        stream_length.add_metric([self.stream_key], length)
        lag = GaugeMetricFamily(
            "fraud_detector_consumer_group_lag",
            "Entries of the stream not yet delivered to the consumer group (XINFO GROUPS lag). "
            "Left out while Redis cannot compute it, for example after XDEL.",
            labels=["stream", "group"],
        )
        pending = GaugeMetricFamily(
            "fraud_detector_consumer_group_pending",
            "Entries delivered to the consumer group but not acknowledged yet (XINFO GROUPS pending).",
            labels=["stream", "group"],
        )
        for group in groups:
            labels = [self.stream_key, group["name"]]
            pending.add_metric(labels, group["pending"])
            if group.get("lag") is not None:
                lag.add_metric(labels, group["lag"])
        return [stream_length, lag, pending]

    def report_failure(self, error):
        if not self.failing:
            logger.warning(
                "Reading stream %s for /metrics failed: %s. fraud_detector_redis_up "
                "stays 0 until Redis responds again", self.stream_key, error,
            )
        self.failing = True

    def report_recovery(self):
        if self.failing:
            logger.info("Reading stream %s for /metrics works again", self.stream_key)
        self.failing = False
