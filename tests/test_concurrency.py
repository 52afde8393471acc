"""Concurrent clicks of one device: exactly `threshold` of them are clean.

The clicks carry no ts, so the check script stamps them with the Redis time
of its run, as it does for every click unless TRUST_CLIENT_TS is set.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest

from config import Settings
from fraud_checks import ClickChecker
from redis_conn import connect
from setup import register_stream_consumer
from validation import Click


@pytest.mark.parametrize("threshold", [1, 2, 5])
def test_concurrent_clicks_exactly_threshold_clean(stack_server, stack_redis, threshold):
    settings = Settings(redis_url=stack_server.url, click_spam_threshold=threshold,
                        stream_consumer="worker")
    client = connect(stack_server.url, 2.0, max_connections=32)
    register_stream_consumer(client, settings)
    checker = ClickChecker(client, settings)
    clicks = [Click("burst-device", "192.0.2.1", f"tx-{i}", None, {}) for i in range(64)]

    with ThreadPoolExecutor(max_workers=32) as pool:
        verdicts = list(pool.map(checker.check, clicks))

    fraud_types = [verdict.fraud_type for verdict in verdicts]
    assert fraud_types.count("clean") == threshold
    assert fraud_types.count("click_spam") == 64 - threshold
    assert len({verdict.entry_id for verdict in verdicts}) == 64
    client.close()
