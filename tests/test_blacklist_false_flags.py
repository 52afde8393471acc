"""Zero false flags: a Cuckoo filter hit is confirmed before a click is flagged.

With bucket size 2 a RedisBloom Cuckoo filter reports an address that was
never added about 2 * 2 * load / 255 of the time, because its fingerprints
have 8 bits. This test fills a filter with 100,000 managed addresses, checks
100,000 other addresses on the real Redis Stack server, and requires every
one of them to be clean.
"""

import ipaddress
import random
import time

import constants
import setup
from config import Settings
from fraud_checks import ClickChecker
from ip_lists.entries import parse_entry
from ip_lists.store import IpList
from validation import Click

LISTED = 100_000
CHECKED = 100_000
BATCH = 1_000  # clicks per check script call
# A filter sized for the listed addresses, so that it is well loaded and
# false positives are frequent, as in a filter that is close to full.
FILTER_CAPACITY = 120_000


def random_addresses(generator, count, used):
    """Return `count` distinct random addresses not in `used`, one in ten IPv6, and add them to it."""
    found = []
    while len(found) < count:
        if len(found) % 10 == 9:
            address = str(ipaddress.IPv6Address((0x2001 << 112) + generator.getrandbits(100)))
        else:
            address = str(ipaddress.IPv4Address(generator.getrandbits(32)))
        if address not in used:
            used.add(address)
            found.append(address)
    return found


def test_no_false_flags_among_100k_addresses(stack_redis):
    started = time.monotonic()
    settings = Settings(redis_url="redis://127.0.0.1:1/0", filter_capacity=FILTER_CAPACITY,
                        click_spam_threshold=1_000_000, stream_maxlen=10_000)
    setup.ensure_filter(stack_redis, settings)
    generator = random.Random(20240601)
    used = set()
    listed = random_addresses(generator, LISTED, used)
    checked = random_addresses(generator, CHECKED, used)
    blacklist = IpList(stack_redis, constants.BLACKLIST, settings)
    checker = ClickChecker(stack_redis, settings)

    statuses = blacklist.add([parse_entry(ip) for ip in listed])
    filter_hits = 0
    fraud_types = {}
    now_ms = int(time.time() * 1000)
    for start in range(0, CHECKED, BATCH):
        batch = checked[start:start + BATCH]
        filter_hits += sum(stack_redis.execute_command("CF.MEXISTS", constants.FILTER_KEY, *batch))
        clicks = [Click(f"device-{ip}", ip, f"tx-{ip}", now_ms, {}) for ip in batch]
        for verdict in checker.check_many(clicks):
            fraud_types[verdict.fraud_type] = fraud_types.get(verdict.fraud_type, 0) + 1
    listed_sample = [Click(f"device-{ip}", ip, "tx", now_ms, {}) for ip in listed[:BATCH]]
    listed_types = {verdict.fraud_type for verdict in checker.check_many(listed_sample)}
    seconds = time.monotonic() - started

    assert statuses.count("added") == LISTED
    assert filter_hits > 100, "the filter gave too few false positives to test their confirmation"
    assert fraud_types == {constants.CLEAN: CHECKED}
    assert listed_types == {constants.IP_BLACKLIST}
    assert seconds < 60
