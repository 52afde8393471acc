"""JSON error answers of the HTTP API.

4xx answers are the caller's fault and name what to fix; 503 means Redis is
unreachable or too slow and the caller may retry; nothing answers a bare 500.
"""

import logging

import redis
from flask import jsonify
from werkzeug.exceptions import HTTPException

from fraud_checks import RequestExpired
from redis_conn import UNAVAILABLE_ERRORS
from validation import InvalidField

logger = logging.getLogger(__name__)

RETRY_AFTER_SEC = 1


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
    logger.warning("Redis unavailable, answering 503: %s", error)
    response = error_response(
        503,
        "redis_unavailable",
        "Redis did not answer in time; the click was not recorded. Retry later.",
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_SEC)
    return response


def handle_redis_error(error):
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
