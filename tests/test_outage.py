"""Redis unreachable: 503 within the timeout, never a hang, and recovery by itself.

Each test runs its own Redis Stack server, because it pauses or kills it.
"""

import time

import pytest
import redis

from app import create_app
from config import Settings
from consumer import StreamWorker
from redis_conn import connect
from tests.conftest import post_click
from tools.redis_stack import RedisStackServer

TIMEOUT_SEC = 0.5


@pytest.fixture
def own_server():
    server = RedisStackServer(appendonly=True, gears=False).start()
    yield server
    server.stop()


@pytest.fixture
def outage_app(own_server):
    settings = Settings(redis_url=own_server.url, redis_timeout_sec=TIMEOUT_SEC,
                        stream_consumer="worker")
    client = connect(own_server.url, TIMEOUT_SEC)
    app = create_app(settings=settings, client=client, start_consumer=False)
    return app, settings


def timed_post(client, **fields):
    started = time.monotonic()
    response = post_click(client, **fields)
    return response, time.monotonic() - started


def wait_for_200(client, limit_sec=2.0):
    deadline = time.monotonic() + limit_sec
    while time.monotonic() < deadline:
        response = post_click(client, device_id="probe")
        if response.status_code == 200:
            return response
        time.sleep(0.05)
    return response


def test_paused_redis_gets_503_within_timeout(own_server, outage_app):
    app, _ = outage_app
    client = app.test_client()
    assert post_click(client).status_code == 200
    own_server.pause()
    try:
        response, elapsed = timed_post(client, transaction_id="during")
    finally:
        own_server.resume()

    assert response.status_code == 503
    assert response.get_json()["error"] == "redis_unavailable"
    assert response.headers["Retry-After"] == "1"
    assert elapsed < TIMEOUT_SEC * 3


def test_click_answered_503_is_never_recorded(own_server, outage_app):
    app, settings = outage_app
    client = app.test_client()
    own_server.pause()
    try:
        response, _ = timed_post(client, transaction_id="during")
        time.sleep(TIMEOUT_SEC)
    finally:
        own_server.resume()
    probe = redis.Redis.from_url(own_server.url, decode_responses=True)

    entries = probe.xrange(settings.stream_key)

    assert response.status_code == 503
    assert [fields["transaction_id"] for _, fields in entries] == []


def test_killed_redis_gets_503_then_recovers(own_server, outage_app):
    app, settings = outage_app
    client = app.test_client()
    assert post_click(client, transaction_id="before").status_code == 200
    own_server.kill()

    response, elapsed = timed_post(client, transaction_id="during")
    own_server.start()
    recovered = wait_for_200(client)

    assert response.status_code == 503
    assert elapsed < TIMEOUT_SEC * 3
    assert recovered.status_code == 200
    probe = redis.Redis.from_url(own_server.url, decode_responses=True)
    ids = [fields["transaction_id"] for _, fields in probe.xrange(settings.stream_key)]
    assert "before" in ids
    assert "during" not in ids


def test_start_without_redis_then_recover(own_server):
    url = own_server.url
    own_server.kill()
    settings = Settings(redis_url=url, redis_timeout_sec=TIMEOUT_SEC, stream_consumer="worker")
    app = create_app(settings=settings, client=connect(url, TIMEOUT_SEC), start_consumer=False)
    client = app.test_client()

    down = post_click(client)
    ready_down = client.get("/readyz")
    own_server.start()
    up = wait_for_200(client)

    assert down.status_code == 503
    assert ready_down.status_code == 503
    assert up.status_code == 200


def test_worker_retries_until_redis_returns(own_server, outage_app):
    app, settings = outage_app
    client = app.test_client()
    for i in range(3):
        post_click(client, device_id=f"d{i}")
    worker_client = connect(own_server.url, TIMEOUT_SEC, block_sec=settings.consumer_block_ms / 1000)
    worker = StreamWorker(worker_client, settings, name="w1")
    own_server.kill()

    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
        worker.process_once(block_ms=0)
    own_server.start()

    assert worker.drain() == 3
    worker_client.close()


def test_redis_back_empty_sets_up_again(own_server, outage_app):
    app, settings = outage_app
    client = app.test_client()
    assert post_click(client, transaction_id="before").status_code == 200
    probe = redis.Redis.from_url(own_server.url, decode_responses=True)
    probe.flushall()  # what a restart without persistence leaves

    response = post_click(client, transaction_id="after")
    ready = client.get("/readyz").get_json()

    assert response.status_code == 200
    assert probe.type("ip_cf") == "MBbloomCF"
    assert probe.xlen(settings.stream_key) == 1
    assert ready["data_types"] == "ok"
    probe.close()


def test_readyz_sets_up_again_after_flush(own_server, outage_app):
    app, _ = outage_app
    client = app.test_client()
    probe = redis.Redis.from_url(own_server.url, decode_responses=True)
    probe.flushall()

    ready = client.get("/readyz").get_json()

    assert ready["data_types"] == "ok"
    assert probe.type("ip_cf") == "MBbloomCF"
    probe.close()
