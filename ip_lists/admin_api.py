"""The admin HTTP API of the blacklist and the allowlist, under /admin/<list>.

Every request needs `Authorization: Bearer <ADMIN_TOKEN>`. Without ADMIN_TOKEN
every request gets 404, so the API is off unless an operator turns it on.
"""

import hmac
import logging

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import BadRequest, NotFound, UnsupportedMediaType

import constants
from errors import RepeatCounter, error_response
from ip_lists import cuckoo
from ip_lists.entries import parse_address, parse_entry
from ip_lists.importer import import_blocklist
from ip_lists.range_index import IndexBusy
from ip_lists.records import NEVER, server_time_ms
from ip_lists.store import IpList
from validation import InvalidField

logger = logging.getLogger(__name__)

blueprint = Blueprint("ip_lists_admin", __name__, url_prefix="/admin/<any(blacklist, allowlist):list_name>")

MAX_EXPIRES_IN_SEC = 100 * 365 * 24 * 3600  # 100 years
REJECTED_LOG_INTERVAL_SEC = 60.0  # at most one log line per interval about rejected tokens

_rejected_log = RepeatCounter(REJECTED_LOG_INTERVAL_SEC)


def service():
    return current_app.extensions["fraud_detector"]


def ip_list(list_name):
    """Return the `IpList` of `list_name`, made once per application."""
    lists = current_app.extensions.setdefault("ip_lists", {})
    if list_name not in lists:
        lists[list_name] = IpList(service().client, list_name, service().settings)
    return lists[list_name]


def _log_rejected_token():
    repeats = _rejected_log.due()
    if repeats is not None:
        logger.warning("Admin API rejected a request without a valid token from %s "
                       "(%d more rejections not logged)", request.remote_addr, repeats)


@blueprint.errorhandler(IndexBusy)
def handle_index_busy(error):
    logger.warning("Admin API: %s", error)
    response = error_response(
        503, "busy",
        f"The entries were saved, but {error}, so the click check may still use the old ranges. "
        "POST to the sweep endpoint of the list to rebuild the index.",
    )
    response.headers["Retry-After"] = "1"
    return response


@blueprint.before_request
def require_token():
    """Reject the request with 404 when the admin API is off, and with 401 without the right token."""
    token = service().settings.admin_token
    if not token:
        raise NotFound()
    scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        supplied.strip().encode("utf-8"), token.encode("utf-8")
    ):
        _log_rejected_token()
        response = error_response(
            401, "unauthorized",
            "Send the admin token set in ADMIN_TOKEN as 'Authorization: Bearer <token>'.",
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="admin"'
        return response
    return None


def expires_at_from(value, field="expires_in_sec"):
    """Return the expiry in server ms for `value` seconds from now, or NEVER for None."""
    if value is None or value == "":
        return NEVER
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_EXPIRES_IN_SEC:
        raise InvalidField(
            field, f"Field '{field}' must be a whole number of seconds from 1 to {MAX_EXPIRES_IN_SEC}."
        )
    return server_time_ms(service().client) + value * 1000


def reason_from(value, field="reason"):
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > constants.MAX_REASON_LENGTH or not value.isprintable():
        raise InvalidField(
            field, f"Field '{field}' must be a string of at most {constants.MAX_REASON_LENGTH} "
            "printable characters, without line breaks.",
        )
    return value


def read_json_object():
    if not request.is_json:
        raise UnsupportedMediaType("Send a JSON object with Content-Type: application/json.")
    try:
        body = request.get_json()
    except BadRequest:
        raise BadRequest("The body is not valid JSON: send a JSON object.") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object such as {\"entry\": \"10.0.0.0/8\"}.")
    return body


def filter_full_warning(entry):
    return (
        f"The Cuckoo filter {constants.FILTER_KEY} is full, so {entry} is blacklisted through "
        f"its record only: CF.EXISTS {constants.FILTER_KEY} does not see it. FILTER_CAPACITY "
        "and FILTER_EXPANSION apply when the filter is created."
    )


@blueprint.post("/entries")
def add_entry(list_name):
    """Add one address or range, or update its expiry and reason."""
    body = read_json_object()
    entry = parse_entry(body.get("entry"), "entry")
    expires_at = expires_at_from(body.get("expires_in_sec"))
    reason = reason_from(body.get("reason"))

    target = ip_list(list_name)
    status = target.add([entry], expires_at, reason)[0]

    result = target.get(entry).as_dict(list_name, target.now_ms())
    result["status"] = "updated" if status == "updated" else "added"
    if result.get("in_filter") is False:
        result["warning"] = filter_full_warning(entry.text)
    logger.info("Admin API: %s %s in the %s", result["status"], entry.text, list_name)
    return jsonify(result), 200 if status == "updated" else 201


def _not_listed(list_name, entry):
    message = f"{entry.text} is not an entry of the {list_name}."
    if list_name == constants.BLACKLIST and not entry.is_range:
        status = cuckoo.filter_status(service().client,
                                      cuckoo.inserted_count_is_current(service().client))
        if status.unmanaged_items:
            message += (
                f" {constants.FILTER_KEY} holds {status.unmanaged_items} items added without "
                f"this API (raw CF.ADDNX). If you added {entry.text} that way, delete it with "
                f"CF.DEL {constants.FILTER_KEY} {entry.text}. The service never deletes an item "
                "that it did not add, because that could delete another address's fingerprint."
            )
    return error_response(404, "not_found", message, entry=entry.text)


@blueprint.get("/entries/<path:entry_text>")
def get_entry(list_name, entry_text):
    """Return the record of one entry."""
    entry = parse_entry(entry_text, "entry")
    target = ip_list(list_name)
    record = target.get(entry)
    if record is None:
        return _not_listed(list_name, entry)
    return jsonify(record.as_dict(list_name, target.now_ms()))


@blueprint.delete("/entries/<path:entry_text>")
def remove_entry(list_name, entry_text):
    """Remove one entry: the other entries, even overlapping ones, stay."""
    entry = parse_entry(entry_text, "entry")
    status = ip_list(list_name).remove([entry])[0]
    if status == "not_found":
        return _not_listed(list_name, entry)
    logger.info("Admin API: removed %s from the %s", entry.text, list_name)
    return jsonify({"entry": entry.text, "list": list_name, "status": status})


def _limit_from(value):
    if value is None:
        return constants.ADMIN_LIST_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= constants.MAX_ADMIN_LIST_LIMIT:
        raise InvalidField("limit", f"Field 'limit' must be a whole number from 1 to "
                                    f"{constants.MAX_ADMIN_LIST_LIMIT}.")
    return int(value)


@blueprint.get("/entries")
def list_entries(list_name):
    """Return one page of entries in address order, and `next_after` to pass as `after` next."""
    limit = _limit_from(request.args.get("limit"))
    after = request.args.get("after")
    after_entry = parse_entry(after, "after") if after else None

    target = ip_list(list_name)
    records, next_after = target.page(after_entry, limit)
    now_ms = target.now_ms()
    return jsonify({
        "list": list_name,
        "entries": [record.as_dict(list_name, now_ms) for record in records],
        "next_after": next_after,
    })


@blueprint.get("/lookup")
def lookup(list_name):
    """Return the entries of the list that match an address, expired ones included."""
    address = parse_address(request.args.get("ip", ""), "ip")
    target = ip_list(list_name)
    now_ms = target.now_ms()
    matches = [record.as_dict(list_name, now_ms) for record in target.matches(address)]
    report = {
        "ip": address.text,
        "list": list_name,
        "listed": any(not match["expired"] for match in matches),
        "matches": matches,
    }
    if list_name == constants.BLACKLIST:
        client = service().client
        report["in_filter"] = bool(client.execute_command("CF.EXISTS", constants.FILTER_KEY, address.text))
        report["filter"] = cuckoo.filter_status(client, cuckoo.inserted_count_is_current(client)).as_dict()
    return jsonify(report)


@blueprint.post("/import")
def import_file(list_name):
    """Import a blocklist sent as the request body (FireHOL netset or one entry per line)."""
    request.max_content_length = constants.MAX_IMPORT_LENGTH
    expires_at = expires_at_from(request.args.get("expires_in_sec"))
    reason = reason_from(request.args.get("reason", "imported through the admin API"))
    try:
        text = request.get_data(cache=False).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The body must be a UTF-8 text file with one entry per line.") from None

    summary = import_blocklist(ip_list(list_name), text.splitlines(), expires_at, reason)

    logger.info("Admin API: imported %d lines into the %s: %d added, %d already present, "
                "%d invalid, %d not in the full filter in %.2f s", summary.lines, list_name,
                summary.added, summary.already_present, summary.invalid, summary.filter_full,
                summary.seconds)
    report = {"list": list_name, **summary.as_dict()}
    if summary.filter_full:
        report["warning"] = filter_full_warning(f"{summary.filter_full} addresses")
    return jsonify(report)


@blueprint.post("/sweep")
def sweep(list_name):
    """Remove expired entries and rebuild the range index."""
    removed = ip_list(list_name).sweep()
    return jsonify({"list": list_name, "removed": removed})


@blueprint.get("/status")
def status(list_name):
    """Return the sizes of the list and, for the blacklist, of the Cuckoo filter."""
    return jsonify(ip_list(list_name).status())
