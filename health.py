"""Liveness and readiness endpoints."""

import time

import redis
from flask import Blueprint, current_app, jsonify

import constants
import gears_registration
import keys
import setup
from redis_conn import UNAVAILABLE_ERRORS

blueprint = Blueprint("health", __name__)

HEARTBEAT_MAX_AGE_MS = 10_000  # a worker that has not read for longer is not active


@blueprint.get("/healthz")
def healthz():
    """Respond 200 while the process serves requests."""
    return jsonify({"status": "ok"})


def active_workers(client):
    since = int(time.time() * 1000) - HEARTBEAT_MAX_AGE_MS
    return client.zrangebyscore(keys.consumer_heartbeats(), since, "+inf")


@blueprint.get("/readyz")
def readyz():
    """Respond 200 when Redis replies, its data types exist and a consumer is active.

    A worker is active when one wrote its heartbeat recently, and a gear is
    active when its registration is on the server. Either must also own the
    stream. For a gear, the report adds the count of entries it could not
    apply and the last such error.
    """
    service = current_app.extensions["fraud_detector"]
    report = {"redis": "unreachable", "data_types": "unknown", "consumer": None}
    try:
        service.prepare()
        service.client.ping()
        report["redis"] = "ok"
        if not service.client.exists(constants.FILTER_KEY):
            service.prepare_again()
        setup.check_data_types(service.client)
        report["data_types"] = "ok"
        report["consumer"] = service.consumer_kind
        if service.consumer_kind == setup.WORKER:
            workers = active_workers(service.client)
            report["workers"] = workers
            report["stream_owner"] = service.client.get(keys.stream_owner())
            report["consumer_active"] = bool(workers) and report["stream_owner"] == setup.WORKER
        else:
            report.update(gears_registration.gear_status(service.client, service.consumer_kind))
            report["consumer_active"] = (
                report["gear_registered"] and report["stream_owner"] == service.consumer_kind
            )
    except UNAVAILABLE_ERRORS as error:
        report["error"] = str(error)
    except (setup.SetupError, redis.RedisError) as error:
        report["data_types"] = "missing"
        report["error"] = str(error)

    ready = report["redis"] == "ok" and report["data_types"] == "ok" and report.get("consumer_active")
    report["status"] = "ready" if ready else "not_ready"
    report["stream"] = service.settings.stream_key
    report["filter"] = constants.FILTER_KEY
    return jsonify(report), 200 if ready else 503
