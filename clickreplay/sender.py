"""Posting of clicks to the service from a pool of threads.

Each worker thread owns one `requests.Session`, which keeps its connection
alive between requests when the server allows it. The workers take clicks from one queue in file order,
so each worker sends its share in file order, but clicks of different workers
can reach the service in any order.
"""

import dataclasses
import logging
import queue
import threading
import time

import requests

import constants

logger = logging.getLogger(__name__)

# Outcomes of a request that is not a 200 with a known fraud type.
HTTP_4XX = "http_4xx"  # the service rejected the click
HTTP_5XX = "http_5xx"  # the service failed, 503 when Redis is down
CONNECTION = "connection"  # refused, reset or broken before a full response
TIMEOUT = "timeout"  # the connect or a read of the response timed out
# Any other status, or a 200 whose body has no known fraud_type.
UNEXPECTED_RESPONSE = "unexpected_response"
ERROR_KINDS = (HTTP_4XX, HTTP_5XX, CONNECTION, TIMEOUT, UNEXPECTED_RESPONSE)

# Clicks queued per worker. It bounds the memory that a fast reader can fill.
QUEUE_DEPTH_PER_WORKER = 16

_END_OF_CLICKS = object()


@dataclasses.dataclass(frozen=True)
class RequestResult:
    """The outcome of posting one click."""

    line_number: int
    outcome: str  # a fraud type of constants.FRAUD_TYPES, or one of ERROR_KINDS
    status_code: int | None  # None when no response arrived
    latency_sec: float
    detail: str = ""  # why the request failed, empty for a known fraud type
    ts_replaced: bool = False  # the response has another ts than the click sent

    @property
    def accepted(self):
        return self.outcome in constants.FRAUD_TYPES


def classify_response(status_code, body, sent_ts):
    """Return (outcome, detail, ts_replaced) for a response of the service.

    Args:
        status_code: the HTTP status.
        body: the decoded JSON body, or None when it was not JSON.
        sent_ts: the `ts` of the posted click, or None if it had none.
    """
    if 400 <= status_code < 600:
        kind = HTTP_4XX if status_code < 500 else HTTP_5XX
        message = body.get("error") if isinstance(body, dict) else None
        return kind, f"HTTP {status_code}: {message or 'no JSON error message'}", False

    if status_code != 200:
        return UNEXPECTED_RESPONSE, f"HTTP {status_code} instead of 200", False
    if not isinstance(body, dict):
        return UNEXPECTED_RESPONSE, "HTTP 200 without a JSON object body", False

    fraud_type = body.get("fraud_type")
    if fraud_type not in constants.FRAUD_TYPES:
        return UNEXPECTED_RESPONSE, f"HTTP 200 with an unknown fraud_type {fraud_type!r}", False

    ts_replaced = sent_ts is not None and body.get("ts") != sent_ts
    return fraud_type, "", ts_replaced


def post_click(session, url, log_click, timeout_sec):
    """Post one click and return its RequestResult. Request errors become outcomes."""
    started = time.perf_counter()
    try:
        response = session.post(
            url, json=log_click.payload, timeout=timeout_sec, allow_redirects=False
        )
        body = _decode_json(response)
    except requests.Timeout:
        return RequestResult(
            log_click.line_number, TIMEOUT, None, time.perf_counter() - started,
            f"timed out after {timeout_sec} s without data",
        )
    except requests.RequestException as error:
        # ConnectionError, and ChunkedEncodingError for a body cut short.
        return RequestResult(
            log_click.line_number, CONNECTION, None, time.perf_counter() - started,
            _describe_request_error(error),
        )
    latency_sec = time.perf_counter() - started

    outcome, detail, ts_replaced = classify_response(
        response.status_code, body, log_click.payload.get("ts")
    )
    return RequestResult(
        log_click.line_number, outcome, response.status_code, latency_sec, detail, ts_replaced
    )


def _describe_request_error(error):
    # requests wraps urllib3's MaxRetryError, whose `reason` is the socket error.
    cause = error.args[0] if error.args else error
    return f"{type(error).__name__}: {getattr(cause, 'reason', cause)}"


def _decode_json(response):
    try:
        return response.json()
    except requests.JSONDecodeError:
        return None


def send_clicks(log_clicks, url, on_result, concurrency=8, timeout_sec=10.0, stop=None):
    """Post every click of `log_clicks` to `url` and pass each result to `on_result`.

    `on_result` runs in the worker threads, so it must be thread-safe. Setting
    `stop` ends the run early: reading stops, and clicks already queued are
    dropped without being sent. If `on_result` raises, the error is logged and
    the run stops the same way.

    Args:
        log_clicks: iterable of LogClick, read in this thread.
        url: the service's click endpoint, such as http://127.0.0.1:5000/.
        on_result: called with each RequestResult.
        concurrency: number of worker threads, each with one keep-alive connection.
        timeout_sec: connect timeout and read timeout of each request, in seconds.
            As in requests, the read timeout limits each wait for data, so a
            slow response can take longer in total.
        stop: a threading.Event to end the run early, or None for a private one.
    """
    stop = stop or threading.Event()
    pending = queue.Queue(maxsize=concurrency * QUEUE_DEPTH_PER_WORKER)
    workers = [
        threading.Thread(
            target=_run_worker,
            args=(pending, url, timeout_sec, on_result, stop),
            name=f"replay-worker-{index}",
            daemon=True,
        )
        for index in range(concurrency)
    ]
    for worker in workers:
        worker.start()

    try:
        for log_click in log_clicks:
            if stop.is_set():
                break
            pending.put(log_click)
    except BaseException:
        # KeyboardInterrupt or a read error: let the workers drain the queue
        # without sending, so that the joins below return.
        stop.set()
        raise
    finally:
        for _ in workers:
            pending.put(_END_OF_CLICKS)
        for worker in workers:
            worker.join()


def _run_worker(pending, url, timeout_sec, on_result, stop):
    with requests.Session() as session:
        # The service sends a bare text/plain verdict to clients that prefer it.
        session.headers["Accept"] = "application/json"
        while True:
            log_click = pending.get()
            if log_click is _END_OF_CLICKS:
                return
            if stop.is_set():
                continue

            result = post_click(session, url, log_click, timeout_sec)
            try:
                on_result(result)
            except Exception:
                # Keep taking clicks from the queue, so that a reader blocked in
                # put() can return and then finds stop set.
                logger.exception("handling the result of line %d failed, stopping the replay",
                                 log_click.line_number)
                stop.set()
