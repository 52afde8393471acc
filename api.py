"""The click endpoint: `POST /`."""

from flask import Blueprint, current_app, jsonify, request
from werkzeug.datastructures import MIMEAccept
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

import metrics
from validation import parse_click

blueprint = Blueprint("api", __name__)


def read_json_body(expected="a JSON object with device_id, ip and transaction_id"):
    """Return the decoded JSON body, or raise a 4xx error that names what is accepted."""
    if not request.is_json:
        raise UnsupportedMediaType(
            "The body must be JSON sent with Content-Type: application/json, "
            f"got {request.content_type or 'no Content-Type'!r}."
        )
    body = request.get_data(cache=True)
    if not body.strip():
        raise BadRequest(f"The body is empty: send {expected}.")
    try:
        return request.get_json()
    except BadRequest:
        raise BadRequest(f"The body is not valid JSON: send {expected}.") from None


def wants_plain_text():
    """Return True when the client prefers the bare fraud_type, the original response format.

    Media type parameters such as `charset=utf-8` are ignored, because
    werkzeug's best_match does not match a type that carries them.
    """
    accepted = MIMEAccept(
        (value.split(";", 1)[0].strip(), quality) for value, quality in request.accept_mimetypes
    )
    return accepted.best_match(["application/json", "text/plain"]) == "text/plain"


@blueprint.post("/")
def check_click():
    """Check one click and respond with its verdict."""
    service = current_app.extensions["fraud_detector"]
    payload = read_json_body()
    click = parse_click(payload, service.settings.trust_client_ts)

    verdict = service.check(click)
    metrics.count_verdicts([verdict])

    if wants_plain_text():
        return verdict.fraud_type, 200, {"Content-Type": "text/plain; charset=utf-8"}
    return jsonify(verdict_body(click, verdict, service.settings))


def verdict_body(click, verdict, settings):
    """Return the JSON response body for a checked click: the event, its verdict and the evidence."""
    return {
        **click.extra,
        "device_id": click.device_id,
        "ip": click.ip,
        "transaction_id": click.transaction_id,
        "ts": verdict.ts,
        "status": verdict.status,
        "fraud_type": verdict.fraud_type,
        "evidence": {
            "clicks_in_window": verdict.clicks_in_window,
            "threshold": settings.click_spam_threshold,
            "window_sec": settings.click_spam_window_sec,
            # Present only when a list matched the address (docs/blacklist.md).
            **({"ip_match": verdict.ip_match} if verdict.ip_match else {}),
        },
        "stream_id": verdict.entry_id,
    }
