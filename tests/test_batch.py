"""`POST /batch`: one verdict per click, in order, as `POST /` would give it."""

import json

import constants
from tests.conftest import redis_snapshot


def click(i, device_id="device-1", ip="198.51.100.7"):
    return {"device_id": device_id, "ip": ip, "transaction_id": f"tx-{i}"}


def test_batch_verdicts_in_order(client):
    response = client.post("/batch", json=[click(i) for i in range(4)])

    body = response.get_json()
    assert response.status_code == 200
    assert body["accepted"] == 4
    assert body["rejected"] == 0
    assert [r["fraud_type"] for r in body["results"]] == ["clean", "clean", "click_spam", "click_spam"]
    assert [r["transaction_id"] for r in body["results"]] == [f"tx-{i}" for i in range(4)]


def test_batch_matches_single_endpoint(client, redis_client):
    redis_client.execute_command("CF.ADDNX", "ip_cf", "203.0.113.7")
    clicks = [click(0), click(1, ip="203.0.113.7"), click(2, device_id="d2"), click(3), click(4)]

    batch = client.post("/batch", json=clicks).get_json()["results"]
    redis_client.delete(*[key for key in redis_client.scan_iter("fraud:{ip_cf}:device:*")])
    single = [client.post("/", json=c).get_json() for c in clicks]

    assert [r["fraud_type"] for r in batch] == [r["fraud_type"] for r in single]
    assert [r["evidence"] for r in batch] == [r["evidence"] for r in single]


def test_invalid_click_gets_own_error(client, redis_client, settings):
    clicks = [click(0), {"device_id": "d", "ip": "not-an-ip", "transaction_id": "t"}, "nope", click(1)]

    body = client.post("/batch", json=clicks).get_json()

    assert body["accepted"] == 2
    assert body["rejected"] == 2
    assert body["results"][1]["field"] == "ip"
    assert body["results"][1]["index"] == 1
    assert body["results"][2]["error"] == "invalid_field"
    assert body["results"][3]["fraud_type"] == "clean"
    assert redis_client.xlen(settings.stream_key) == 2


def test_every_click_of_batch_reaches_stream(client, redis_client, settings):
    client.post("/batch", json=[click(i, device_id=f"d{i}") for i in range(50)])

    assert redis_client.xlen(settings.stream_key) == 50


def test_invalid_batches_write_nothing(client, redis_client):
    too_many = [click(i) for i in range(constants.MAX_BATCH_CLICKS + 1)]
    cases = [
        ("application/json", json.dumps({"clicks": []}), 400),
        ("application/json", "[]", 400),
        ("application/json", json.dumps(too_many), 400),
        ("application/json", "[{", 400),
        ("text/plain", json.dumps([click(0)]), 415),
        ("application/json", json.dumps([{**click(0), "pad": "x" * 200}] * 12000), 413),
    ]
    before = redis_snapshot(redis_client)

    for content_type, data, status in cases:
        response = client.post("/batch", data=data, headers={"Content-Type": content_type})
        assert response.status_code == status, data[:80]
        assert response.get_json()["message"]

    assert redis_snapshot(redis_client) == before


def test_full_batch_of_max_size_accepted(client, redis_client, settings):
    clicks = [click(i, device_id=f"d{i % 100}") for i in range(constants.MAX_BATCH_CLICKS)]

    body = client.post("/batch", json=clicks).get_json()

    assert body["accepted"] == constants.MAX_BATCH_CLICKS
    assert redis_client.xlen(settings.stream_key) == constants.MAX_BATCH_CLICKS
