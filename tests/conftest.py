"""Shared fixtures: fakeredis for fast unit tests, a real Redis Stack server
for everything that touches module commands, Lua, streams or Gears.

The Redis Stack server starts once per test session on a free loopback port.
When it cannot start, the tests that need it fail with the reason: they are
never skipped.
"""

import os
import sys

import fakeredis
import pytest
import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from app import create_app  # noqa: E402
from config import Settings  # noqa: E402
from tools.redis_stack import RedisStackServer  # noqa: E402

# Real input data: the TalkingData click log sample and the FireHOL level 1
# blocklist. FRAUD_TEST_DATA_DIR overrides the folder beside the checkout.
DATA_DIR = os.environ.get("FRAUD_TEST_DATA_DIR") or os.path.join(
    os.path.dirname(ROOT), "shared", "data"
)


@pytest.fixture(scope="session")
def stack_server():
    """A Redis Stack 7.4 server with RedisBloom, RedisTimeSeries and RedisGears 2."""
    server = RedisStackServer().start()
    yield server
    server.stop()


@pytest.fixture
def stack_redis(stack_server):
    """A client of the session's Redis Stack server, flushed before the test."""
    client = redis.Redis.from_url(stack_server.url, decode_responses=True)
    client.flushall()
    for library in client.execute_command("TFUNCTION", "LIST"):
        name = library[library.index("name") + 1] if isinstance(library, list) else library["name"]
        client.execute_command("TFUNCTION", "DELETE", name)
    yield client
    client.close()


@pytest.fixture
def fake_redis():
    """A fakeredis client with Lua, Cuckoo filter and time-series support."""
    # A server of its own per test, so each one frees its data (a 1M-item filter
    # is about 70 MB) when the test ends.
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    yield client
    client.close()


@pytest.fixture(params=["fakeredis", "redis-stack"])
def any_redis(request):
    """The same test on fakeredis and on the real Redis Stack server."""
    return request.getfixturevalue("fake_redis" if request.param == "fakeredis" else "stack_redis")


@pytest.fixture
def settings():
    return Settings(redis_url="redis://127.0.0.1:1/0", stream_consumer="worker")


def make_app(client, settings):
    app = create_app(settings=settings, client=client, start_consumer=False)
    app.testing = True
    return app


@pytest.fixture
def app(any_redis, settings):
    return make_app(any_redis, settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def redis_client(app):
    return app.extensions["fraud_detector"].client


def post_click(client, device_id="device-1", ip="198.51.100.7", transaction_id="tx-1", **extra):
    """POST one click and return the response."""
    body = {"device_id": device_id, "ip": ip, "transaction_id": transaction_id, **extra}
    return client.post("/", json=body)


def redis_snapshot(client):
    """Return every key with its type and size, to prove that nothing was written."""
    snapshot = {}
    for key in client.scan_iter(count=1000):
        key_type = client.type(key)
        size = None
        if key_type == "stream":
            size = client.xlen(key)
        elif key_type == "zset":
            size = client.zcard(key)
        elif key_type == "MBbloomCF":
            size = client.cf().info(key).insertedNum
        elif key_type == "TSDB-TYPE":
            size = client.ts().info(key).total_samples
        snapshot[key] = (key_type, size)
    return snapshot
