"""JSON error responses of the HTTP API.

A 4xx response means the caller sent bad input, and its message names what to
fix. A 503 response means Redis is unreachable or too slow, and the caller
may retry. No handler returns a bare 500 page.
"""

import logging
import threading
import time

import redis
from flask import jsonify
from werkzeug.exceptions import HTTPException

import metrics
from fraud_checks import RequestExpired
from redis_conn import UNAVAILABLE_ERRORS
from validation import InvalidField

logger = logging.getLogger(__name__)

RETRY_AFTER_SEC = 1
UNAVAILABLE_LOG_INTERVAL_SEC = 1.0  # at most one 503 log line per interval


class RepeatCounter:
    """Counts repeats of one log line so that an outage logs once per interval."""

    def __init__(self, interval_sec):
        self.interval_sec = interval_sec
        self.lock = threading.Lock()
        self.next_log = 0.0
        self.suppressed = 0

    def due(self):
        """Return the number of repeats since the last line, or None when not due yet."""
        with self.lock:
            now = time.monotonic()
            if now < self.next_log:
                self.suppressed += 1
                return None
            self.next_log = now + self.interval_sec
            repeats, self.suppressed = self.suppressed, 0
            return repeats


_unavailable_log = RepeatCounter(UNAVAILABLE_LOG_INTERVAL_SEC)


def error_response(status, error, message, **extra):
    response = jsonify({"error": error, "message": message, **extra})
    response.status_code = status
    return response


def handle_invalid_field(error):
    return error_response(400, "invalid_field", error.message, field=error.field)


def handle_http_error(error):
    name = error.name.lower().replace(" ", "_")
    return error_response(error.code or 500, name, error.description or error.name)


def handle_redis_unavailable(error):
    metrics.count_redis_error(error)
    repeats = _unavailable_log.due()
    if repeats is not None:
        logger.warning("Redis unavailable, responding 503: %s (%d more 503 responses not logged "
                       "in the last %.0f s)", error, repeats, UNAVAILABLE_LOG_INTERVAL_SEC)
    response = error_response(
        503,
        "redis_unavailable",
        "Redis did not answer in time; the click was not recorded. Retry later.",
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_SEC)
    return response


def handle_redis_error(error):
    metrics.count_redis_error(error)
    logger.error("Redis returned an error: %s", error)
    return error_response(500, "redis_error", f"Redis returned an error: {error}")


def handle_unexpected(error):
    logger.exception("Unexpected error while serving a request")
    return error_response(500, "internal_error", "The service failed unexpectedly; see its log.")


def register_error_handlers(app):
    app.register_error_handler(InvalidField, handle_invalid_field)
    app.register_error_handler(HTTPException, handle_http_error)
    for error_class in (*UNAVAILABLE_ERRORS, RequestExpired):
        app.register_error_handler(error_class, handle_redis_unavailable)
    app.register_error_handler(redis.RedisError, handle_redis_error)
    app.register_error_handler(Exception, handle_unexpected)
