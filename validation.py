"""Validation of a click sent by a client.

`parse_click` turns a decoded JSON body into a `Click` or raises
`InvalidField`, whose message names the field and what is accepted.
"""

import dataclasses
import ipaddress
import math
import re

import constants

REQUIRED_FIELDS = ("device_id", "ip", "transaction_id")

# Fields that the check writes into the stream entry; a client cannot set them.
SERVICE_FIELDS = ("status", "fraud_type", "clicks_in_window", "threshold", "window_ms",
                  "ip_match")

# Keys of the JSON response that the service fills; an extra field of the
# same name would reach the stream but not the response.
RESPONSE_FIELDS = ("evidence", "stream_id")

FIELD_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]+")
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", int: "number",
                   float: "number", bool: "boolean", type(None): "null"}


class InvalidField(ValueError):
    """A field of a click is missing or invalid.

    Attributes:
        field: name of the field, or None when the whole body is at fault.
        message: one sentence that names the field and what is accepted.
    """

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclasses.dataclass(frozen=True)
class Click:
    device_id: str
    ip: str  # normalised: IPv4-mapped IPv6 addresses become IPv4
    transaction_id: str
    ts: int | None  # ms since the epoch; None: Redis stamps its own time
    extra: dict  # field name -> JSON scalar as the client sent it

    def stream_fields(self):
        """Return the field, value pairs of the stream entry, as strings.

        The check script adds `ts` and the verdict fields.
        """
        fields = [
            "device_id", self.device_id,
            "ip", self.ip,
            "transaction_id", self.transaction_id,
        ]
        for name, value in self.extra.items():
            fields += [name, scalar_to_string(value)]
        return fields


def json_type(value):
    return JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def scalar_to_string(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _check_utf8(name, value):
    """Raise `InvalidField` for a string that UTF-8 cannot encode (a lone surrogate)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidField(
            name, f"Field '{name}' is not valid Unicode text: it contains a lone surrogate."
        ) from None


def _required_string(payload, name):
    if name not in payload:
        raise InvalidField(name, f"Field '{name}' is missing: send it as a non-empty string.")
    value = payload[name]
    if not isinstance(value, str):
        raise InvalidField(name, f"Field '{name}' must be a string, got a JSON {json_type(value)}.")
    if not value.strip():
        raise InvalidField(name, f"Field '{name}' is empty: send a non-empty string.")
    _check_utf8(name, value)
    if len(value) > constants.MAX_ID_LENGTH:
        raise InvalidField(
            name,
            f"Field '{name}' is {len(value)} characters long; "
            f"at most {constants.MAX_ID_LENGTH} are accepted.",
        )
    return value


def parse_ip(value, field="ip"):
    """Return the normalised text form of an IPv4 or IPv6 address."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise InvalidField(
            field, f"Field '{field}' is not a valid IPv4 or IPv6 address: {value[:64]!r}."
        ) from None
    if address.version == 6 and address.scope_id is not None:
        # A zone index ("%eth0") names a link of the client's host, and would
        # make the same address miss its blacklist entry.
        raise InvalidField(
            field, f"Field '{field}' has an IPv6 zone index; send the address without '%...'."
        )
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def _client_ts(value):
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidField(
            "ts", "Field 'ts' must be an integer number of milliseconds since the epoch."
        )
    if isinstance(value, str):
        if not value.isdigit():
            raise InvalidField(
                "ts", "Field 'ts' must be an integer number of milliseconds since the epoch."
            )
        value = int(value)
    if not 0 < value <= MAX_TS_MS:
        raise InvalidField("ts", f"Field 'ts' must be between 1 and {MAX_TS_MS} ms, got {value}.")
    return value


def _extra_fields(payload):
    extra = {}
    for name, value in payload.items():
        if name in REQUIRED_FIELDS or name == "ts":
            continue
        if name in SERVICE_FIELDS or name in RESPONSE_FIELDS:
            raise InvalidField(name, f"Field '{name}' is set by the service and cannot be sent.")
        if len(name) > constants.MAX_FIELD_NAME_LENGTH or not FIELD_NAME_PATTERN.fullmatch(name):
            raise InvalidField(
                name[:64],
                f"Field name {name[:64]!r} is invalid: use 1 to "
                f"{constants.MAX_FIELD_NAME_LENGTH} letters, digits, '_', '.' or '-'.",
            )
        if value is None or not isinstance(value, (str, int, float, bool)):
            raise InvalidField(
                name, f"Field '{name}' must be a string, number or boolean, not a nested value."
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidField(name, f"Field '{name}' must be a finite number.")
        if isinstance(value, str):
            _check_utf8(name, value)
        if len(scalar_to_string(value)) > constants.MAX_FIELD_VALUE_LENGTH:
            raise InvalidField(
                name,
                f"Field '{name}' is too long; at most "
                f"{constants.MAX_FIELD_VALUE_LENGTH} characters are accepted.",
            )
        extra[name] = value

    if len(extra) > constants.MAX_EXTRA_FIELDS:
        raise InvalidField(
            None,
            f"The click has {len(extra)} extra fields; at most "
            f"{constants.MAX_EXTRA_FIELDS} are accepted besides device_id, ip, "
            "transaction_id and ts.",
        )
    return extra


def parse_click(payload, trust_client_ts=False):
    """Validate one decoded JSON value and return it as a `Click`.

    Args:
        payload: the decoded JSON body.
        trust_client_ts: use the client's `ts` field when it sends one.
            Without it a client `ts` is ignored, and the check script stamps
            the click with the Redis server's time.
    """
    if not isinstance(payload, dict):
        raise InvalidField(
            None,
            "The body must be a JSON object with the fields device_id, ip and "
            f"transaction_id, got a JSON {json_type(payload)}.",
        )

    device_id = _required_string(payload, "device_id")
    ip = parse_ip(_required_string(payload, "ip"))
    transaction_id = _required_string(payload, "transaction_id")
    ts = None
    if trust_client_ts and payload.get("ts") is not None:
        ts = _client_ts(payload["ts"])
    extra = _extra_fields(payload)

    return Click(device_id, ip, transaction_id, ts, extra)
