"""The batch endpoint: `POST /batch` checks many clicks in one Redis call."""

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import BadRequest

import constants
import metrics
from api import read_json_body, verdict_body
from validation import InvalidField, json_type, parse_click

blueprint = Blueprint("batch", __name__)

EXPECTED = f"a JSON array of 1 to {constants.MAX_BATCH_CLICKS} click objects"


@blueprint.post("/batch")
def check_batch():
    """Check a JSON array of clicks and respond with one result per click, in order.

    An invalid click gets its own error entry and does not fail the others.
    The valid clicks are checked in order in one script call, so each gets
    exactly the verdict that `POST /` would give it.
    """
    service = current_app.extensions["fraud_detector"]
    request.max_content_length = constants.MAX_BATCH_CONTENT_LENGTH
    payload = read_json_body(EXPECTED)
    if not isinstance(payload, list):
        raise BadRequest(f"The body must be {EXPECTED}, got a JSON {json_type(payload)}.")
    if not 1 <= len(payload) <= constants.MAX_BATCH_CLICKS:
        raise BadRequest(f"The batch has {len(payload)} clicks; send {EXPECTED}.")

    results = [None] * len(payload)
    valid = []
    for index, item in enumerate(payload):
        try:
            valid.append((index, parse_click(item, service.settings.trust_client_ts)))
        except InvalidField as error:
            results[index] = {"index": index, "error": "invalid_field", "field": error.field,
                              "message": error.message}

    metrics.note_batch(len(valid), len(payload) - len(valid))
    verdicts = service.check_many([click for _, click in valid])
    metrics.count_verdicts(verdicts)

    for (index, click), verdict in zip(valid, verdicts):
        results[index] = verdict_body(click, verdict, service.settings)
    return jsonify({
        "accepted": len(valid),
        "rejected": len(payload) - len(valid),
        "results": results,
    })
