"""The live dashboard: `GET /dashboard` and the JSON it polls, for people without Grafana.

The page charts the clicks per second of each fraud type, read from the event
counters (one time series per fraud type, see `docs/design.md`). The chart
library uPlot comes from the npm registry: `npm ci` installs it under
`node_modules/`, and this blueprint serves its files from there, so the page
needs no CDN.
"""

import logging
import os

from flask import Blueprint, current_app, jsonify, render_template, request, send_from_directory

import constants
import metrics
from errors import RETRY_AFTER_SEC, RepeatCounter, error_response
from redis_conn import UNAVAILABLE_ERRORS
from validation import InvalidField

logger = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.abspath(__file__))
UPLOT_DIST = os.path.join(ROOT, "node_modules", "uplot", "dist")
VENDOR_FILES = ("uPlot.iife.min.js", "uPlot.min.css")

WINDOW_CHOICES_MIN = (1, 5, 15, 30, 60)  # minutes the page offers
DEFAULT_MINUTES = 5  # minutes of the chart when the page opens
MAX_MINUTES = 60  # minutes that /dashboard/data returns at most
BUCKET_MS = 1000  # one chart point per second
REFRESH_MS = 5000  # how often the page polls /dashboard/data

blueprint = Blueprint(
    "dashboard", __name__,
    template_folder="templates", static_folder="static", static_url_path="/dashboard/static",
)

_unavailable_log = RepeatCounter(60.0)  # at most one outage log line a minute


@blueprint.record_once
def check_vendor_files(state):
    missing = missing_vendor_files()
    if missing:
        logger.warning(
            "The dashboard cannot draw its chart: %s missing under %s. Run `npm ci` in %s.",
            ", ".join(missing), UPLOT_DIST, ROOT,
        )


def missing_vendor_files():
    return [name for name in VENDOR_FILES if not os.path.isfile(os.path.join(UPLOT_DIST, name))]


@blueprint.get("/dashboard")
def page():
    """Send the dashboard page, whose script polls /dashboard/data."""
    return render_template(
        "dashboard.html",
        fraud_types=constants.FRAUD_TYPES,
        window_choices=WINDOW_CHOICES_MIN,
        default_minutes=DEFAULT_MINUTES,
        refresh_ms=REFRESH_MS,
    )


@blueprint.get("/dashboard/vendor/<name>")
def vendor_file(name):
    """Send a file of the uPlot package from node_modules, or an error that names the install command."""
    if name not in VENDOR_FILES:
        return error_response(404, "not_found", f"No vendor file {name!r}: the dashboard "
                              f"serves {', '.join(VENDOR_FILES)}.")
    if name in missing_vendor_files():
        return error_response(
            500, "dashboard_library_missing",
            f"uPlot is not installed: {os.path.join(UPLOT_DIST, name)} is missing. "
            f"Run `npm ci` in {ROOT} and reload the page.",
        )
    return send_from_directory(UPLOT_DIST, name, max_age=3600)


@blueprint.get("/dashboard/data")
def data():
    """Send clicks per second by fraud type over the last `minutes`, with totals."""
    minutes = parse_minutes(request.args.get("minutes"))
    service = current_app.extensions["fraud_detector"]
    try:
        return jsonify(read_event_rates(service.client, minutes))
    except UNAVAILABLE_ERRORS as error:
        metrics.count_redis_error(error)
        repeats = _unavailable_log.due()
        if repeats is not None:
            logger.warning("Dashboard data unavailable, responding 503: %s "
                           "(%d more such responses not logged)", error, repeats)
        response = error_response(
            503, "redis_unavailable",
            "Redis did not answer in time, so the dashboard has no new data. "
            "The page retries on its next refresh.",
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_SEC)
        return response


def parse_minutes(raw):
    """Return the `minutes` query parameter as an int from 1 to MAX_MINUTES."""
    if raw is None or raw == "":
        return DEFAULT_MINUTES
    expected = f"an integer from 1 to {MAX_MINUTES}"
    try:
        minutes = int(raw)
    except ValueError:
        raise InvalidField("minutes", f"minutes must be {expected}, got {raw!r}.") from None
    if not 1 <= minutes <= MAX_MINUTES:
        raise InvalidField("minutes", f"minutes must be {expected}, got {minutes}.")
    return minutes


def read_event_rates(client, minutes):
    """Return the events per second of each fraud type over the last `minutes` whole seconds.

    The window ends at the start of the current second by the Redis clock,
    which also stamps the samples, so the chart has no partial last point. Each
    sample's value is a number of events, so the sum per one-second bucket is
    events per second. Seconds without samples are 0.
    """
    seconds, microseconds = client.time()
    end_ms = (seconds * 1000 + microseconds // 1000) // BUCKET_MS * BUCKET_MS
    start_ms = end_ms - minutes * 60_000
    reply = client.ts().mrange(
        start_ms, end_ms - 1, [f"service={constants.SERIES_LABEL_SERVICE}"],
        aggregation_type="sum", bucket_size_msec=BUCKET_MS, select_labels=["fraud_type"],
    )

    bucket_count = (end_ms - start_ms) // BUCKET_MS
    per_second = {fraud_type: [0] * bucket_count for fraud_type in constants.FRAUD_TYPES}
    for series in reply:
        for labels, samples in series.values():
            counts = per_second.get(labels.get("fraud_type"))
            if counts is None:
                continue
            for timestamp, value in samples:
                index = (int(timestamp) - start_ms) // BUCKET_MS
                if 0 <= index < bucket_count:
                    counts[index] += int(value)

    totals = {fraud_type: sum(counts) for fraud_type, counts in per_second.items()}
    total = sum(totals.values())
    fraud = total - totals[constants.CLEAN]
    return {
        "minutes": minutes,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "bucket_ms": BUCKET_MS,
        "timestamps": [(start_ms + i * BUCKET_MS) // 1000 for i in range(bucket_count)],
        "per_second": per_second,
        "totals": totals,
        "total": total,
        "fraud": fraud,
        "fraud_share": fraud / total if total else None,
    }
