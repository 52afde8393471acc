"""The click endpoint, on fakeredis and on the real Redis Stack server."""

import pytest

import constants
import keys
from tests.conftest import post_click


def test_three_quick_clicks_clean_clean_spam(client):
    verdicts = [post_click(client, transaction_id=f"tx-{i}").get_json() for i in range(3)]

    assert [v["fraud_type"] for v in verdicts] == ["clean", "clean", "click_spam"]
    assert [v["status"] for v in verdicts] == ["clean", "clean", "fraud"]
    assert [v["evidence"]["clicks_in_window"] for v in verdicts] == [0, 1, 2]


def test_blacklisted_ip_is_flagged(client, redis_client):
    redis_client.execute_command("CF.ADDNX", "ip_cf", "203.0.113.7")

    verdict = post_click(client, ip="203.0.113.7").get_json()

    assert verdict["fraud_type"] == "ip_blacklist"
    assert verdict["status"] == "fraud"


def test_blacklist_wins_over_click_spam(client, redis_client):
    for i in range(3):
        post_click(client, transaction_id=f"tx-{i}")
    redis_client.execute_command("CF.ADDNX", "ip_cf", "198.51.100.7")

    verdict = post_click(client, transaction_id="tx-last").get_json()

    assert verdict["fraud_type"] == "ip_blacklist"


def test_response_carries_event_and_evidence(client, settings):
    response = post_click(client, campaign="spring", os=19, attributed=False)

    body = response.get_json()
    assert response.status_code == 200
    assert body["device_id"] == "device-1"
    assert body["transaction_id"] == "tx-1"
    assert body["campaign"] == "spring"
    assert body["os"] == 19
    assert body["attributed"] is False
    assert isinstance(body["ts"], int)
    assert body["evidence"] == {
        "clicks_in_window": 0,
        "threshold": settings.click_spam_threshold,
        "window_sec": settings.click_spam_window_sec,
    }


@pytest.mark.parametrize("accept", ["text/plain", "text/plain;charset=utf-8", "text/*",
                                    "application/json;q=0.5, text/plain"])
def test_plain_text_accept_gets_bare_fraud_type(client, accept):
    response = client.post(
        "/",
        json={"device_id": "d", "ip": "192.0.2.1", "transaction_id": "t"},
        headers={"Accept": accept},
    )

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == "clean"


@pytest.mark.parametrize("accept", ["*/*", "application/json", "text/plain;q=0.5, application/json"])
def test_json_accept_gets_json(client, accept):
    response = client.post(
        "/",
        json={"device_id": "d", "ip": "192.0.2.1", "transaction_id": "t"},
        headers={"Accept": accept},
    )

    assert response.mimetype == "application/json"


def test_every_checked_event_reaches_the_stream(client, redis_client, settings):
    redis_client.execute_command("CF.ADDNX", "ip_cf", "203.0.113.7")
    post_click(client, transaction_id="a", channel="7")
    post_click(client, transaction_id="b", ip="203.0.113.7")

    entries = redis_client.xrange(settings.stream_key)

    assert len(entries) == 2
    first = entries[0][1]
    assert first["fraud_type"] == "clean"
    assert first["status"] == "clean"
    assert first["channel"] == "7"
    assert first["clicks_in_window"] == "0"
    assert first["threshold"] == str(settings.click_spam_threshold)
    assert first["window_ms"] == str(settings.window_ms)
    assert entries[1][1]["fraud_type"] == "ip_blacklist"


def test_window_member_is_stream_entry_id(client, redis_client):
    body = post_click(client).get_json()

    members = redis_client.zrange(keys.device_window("device-1"), 0, -1, withscores=True)

    assert members == [(body["stream_id"], float(body["ts"]))]


def test_same_millisecond_clicks_are_two_members(client, redis_client, settings):
    trusted = settings.__class__(**{**settings.__dict__, "trust_client_ts": True})
    client.application.extensions["fraud_detector"].settings = trusted
    client.application.extensions["fraud_detector"].checker.settings = trusted

    first = post_click(client, transaction_id="a", ts=1_700_000_000_000).get_json()
    second = post_click(client, transaction_id="b", ts=1_700_000_000_000).get_json()

    assert first["ts"] == second["ts"] == 1_700_000_000_000
    assert redis_client.zcard(keys.device_window("device-1")) == 2
    assert second["evidence"]["clicks_in_window"] == 1


def test_client_ts_ignored_unless_trusted(client):
    body = post_click(client, ts=1_000).get_json()

    assert body["ts"] > 1_600_000_000_000


def test_device_id_equal_to_service_key_stays_apart(client, redis_client, settings):
    device_ids = [constants.FILTER_KEY, settings.stream_key, keys.event_series("clean"),
                  keys.device_window("x")]

    for device_id in device_ids:
        assert post_click(client, device_id=device_id).status_code == 200

    assert redis_client.type(constants.FILTER_KEY) == "MBbloomCF"
    assert redis_client.type(settings.stream_key) == "stream"
    for device_id in device_ids:
        assert redis_client.zcard(keys.device_window(device_id)) == 1


def test_window_expires_and_trims(client, redis_client, settings):
    trusted = settings.__class__(**{**settings.__dict__, "trust_client_ts": True})
    client.application.extensions["fraud_detector"].checker.settings = trusted
    client.application.extensions["fraud_detector"].settings = trusted
    window = keys.device_window("device-1")

    post_click(client, transaction_id="old", ts=1_700_000_000_000)
    post_click(client, transaction_id="new", ts=1_700_000_000_000 + settings.window_ms + 1)

    assert redis_client.zcard(window) == 1
    assert 0 < redis_client.pttl(window) <= settings.window_ms


def test_click_exactly_one_window_old_still_counts(client, settings):
    trusted = settings.__class__(**{**settings.__dict__, "trust_client_ts": True})
    client.application.extensions["fraud_detector"].checker.settings = trusted
    client.application.extensions["fraud_detector"].settings = trusted

    post_click(client, transaction_id="a", ts=1_700_000_000_000)
    body = post_click(client, transaction_id="b", ts=1_700_000_000_000 + settings.window_ms).get_json()

    assert body["evidence"]["clicks_in_window"] == 1


def test_ipv6_and_mapped_addresses(client, redis_client):
    redis_client.execute_command("CF.ADDNX", "ip_cf", "2001:db8::1")
    redis_client.execute_command("CF.ADDNX", "ip_cf", "192.0.2.55")

    v6 = post_click(client, ip="2001:DB8:0:0::1").get_json()
    mapped = post_click(client, device_id="other", ip="::ffff:192.0.2.55").get_json()

    assert v6["ip"] == "2001:db8::1"
    assert v6["fraud_type"] == "ip_blacklist"
    assert mapped["ip"] == "192.0.2.55"
    assert mapped["fraud_type"] == "ip_blacklist"
