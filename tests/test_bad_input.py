"""Bad requests get a 4xx JSON response that names the problem, and write nothing."""

import json

import pytest

import constants
from tests.conftest import redis_snapshot

GOOD = {"device_id": "device-1", "ip": "198.51.100.7", "transaction_id": "tx-1"}
JSON = "application/json"


def body(**changes):
    click = {**GOOD, **changes}
    return json.dumps({k: v for k, v in click.items() if v is not ...})


# (case name, method, content type, body, expected status, field named in the response)
CASES = [
    ("not json", "POST", JSON, "{device_id: 1}", 400, None),
    ("truncated json", "POST", JSON, '{"device_id": "d"', 400, None),
    ("empty body", "POST", JSON, "", 400, None),
    ("whitespace body", "POST", JSON, "   ", 400, None),
    ("json array", "POST", JSON, "[1, 2]", 400, None),
    ("json string", "POST", JSON, '"click"', 400, None),
    ("json number", "POST", JSON, "42", 400, None),
    ("json null", "POST", JSON, "null", 400, None),
    ("form content type", "POST", "application/x-www-form-urlencoded", body(), 415, None),
    ("text content type", "POST", "text/plain", body(), 415, None),
    ("no content type", "POST", None, body(), 415, None),
    ("missing device_id", "POST", JSON, body(device_id=...), 400, "device_id"),
    ("missing ip", "POST", JSON, body(ip=...), 400, "ip"),
    ("missing transaction_id", "POST", JSON, body(transaction_id=...), 400, "transaction_id"),
    ("empty device_id", "POST", JSON, body(device_id=""), 400, "device_id"),
    ("blank transaction_id", "POST", JSON, body(transaction_id="   "), 400, "transaction_id"),
    ("numeric device_id", "POST", JSON, body(device_id=17), 400, "device_id"),
    ("null ip", "POST", JSON, body(ip=None), 400, "ip"),
    ("list transaction_id", "POST", JSON, body(transaction_id=["a"]), 400, "transaction_id"),
    ("object device_id", "POST", JSON, body(device_id={"a": 1}), 400, "device_id"),
    ("boolean ip", "POST", JSON, body(ip=True), 400, "ip"),
    ("long device_id", "POST", JSON, body(device_id="d" * (constants.MAX_ID_LENGTH + 1)), 400, "device_id"),
    ("long transaction_id", "POST", JSON,
     body(transaction_id="t" * (constants.MAX_ID_LENGTH + 1)), 400, "transaction_id"),
    ("ip with port", "POST", JSON, body(ip="198.51.100.7:80"), 400, "ip"),
    ("ip out of range", "POST", JSON, body(ip="256.1.1.1"), 400, "ip"),
    ("ip with cidr", "POST", JSON, body(ip="10.0.0.0/8"), 400, "ip"),
    ("ip host name", "POST", JSON, body(ip="example.com"), 400, "ip"),
    ("ip bad v6", "POST", JSON, body(ip="2001:db8:::1"), 400, "ip"),
    ("ip with spaces", "POST", JSON, body(ip=" 198.51.100.7"), 400, "ip"),
    ("nested extra field", "POST", JSON, body(campaign={"id": 1}), 400, "campaign"),
    ("list extra field", "POST", JSON, body(tags=["a", "b"]), 400, "tags"),
    ("null extra field", "POST", JSON, body(campaign=None), 400, "campaign"),
    ("long extra value", "POST", JSON,
     body(ua="u" * (constants.MAX_FIELD_VALUE_LENGTH + 1)), 400, "ua"),
    ("bad extra name", "POST", JSON, body(**{"bad name!": "x"}), 400, "bad name!"),
    ("client status", "POST", JSON, body(status="clean"), 400, "status"),
    ("client fraud_type", "POST", JSON, body(fraud_type="clean"), 400, "fraud_type"),
    ("client clicks_in_window", "POST", JSON, body(clicks_in_window=0), 400, "clicks_in_window"),
    ("too many extra fields", "POST", JSON,
     body(**{f"f{i}": i for i in range(constants.MAX_EXTRA_FIELDS + 1)}), 400, None),
    ("nan extra value", "POST", JSON, '{"device_id": "d", "ip": "198.51.100.7", '
     '"transaction_id": "t", "score": NaN}', 400, "score"),
    ("body over limit", "POST", JSON, body(pad="x" * (constants.MAX_CONTENT_LENGTH + 1)), 413, None),
    ("get method", "GET", None, None, 405, None),
    ("put method", "PUT", JSON, body(), 405, None),
    ("delete method", "DELETE", None, None, 405, None),
    ("unknown path", "POST", JSON, body(), 404, None),
    ("lone surrogate device_id", "POST", JSON, '{"device_id": "\\ud800", "ip": "198.51.100.7", '
     '"transaction_id": "t"}', 400, "device_id"),
    ("lone surrogate extra value", "POST", JSON, '{"device_id": "d", "ip": "198.51.100.7", '
     '"transaction_id": "t", "ua": "x\\udfff"}', 400, "ua"),
    ("ipv6 zone index", "POST", JSON, body(ip="2001:db8::5%1"), 400, "ip"),
    ("client evidence", "POST", JSON, body(evidence="none"), 400, "evidence"),
    ("client stream_id", "POST", JSON, body(stream_id="1-0"), 400, "stream_id"),
    ("device id is stream key", "POST", JSON, body(device_id="data_stream", ip="1.2.3"), 400, "ip"),
    ("device id is filter key", "POST", JSON, body(device_id="ip_cf", ip=""), 400, "ip"),
]


@pytest.mark.parametrize(
    "method, content_type, data, status, field",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_request_rejected_without_writes(client, redis_client, method, content_type, data,
                                             status, field):
    path = "/nowhere" if status == 404 else "/"
    headers = {"Content-Type": content_type} if content_type else {}
    before = redis_snapshot(redis_client)

    response = client.open(path, method=method, data=data, headers=headers)

    answer = response.get_json()
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert answer["error"]
    assert answer["message"]
    if field is not None:
        assert answer["field"] == field
        assert field in answer["message"]
    assert redis_snapshot(redis_client) == before


def test_corpus_is_large_enough():
    assert len(CASES) >= 40
