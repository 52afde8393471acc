"""The blacklist and the allowlist: ranges, expiry, removal, the admin API and the CLI."""

import ipaddress
import random
import time

import pytest

import constants
import keys
from config import Settings
from ip_lists.entries import parse_entry, supernets
from ip_lists.range_index import rebuild_segments
from ip_lists.segments import build_segments, group_by_outermost
from ip_lists.store import IpList
from tests.conftest import DATA_DIR, make_app, post_click
from validation import InvalidField

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# A small filter: fakeredis keeps every test's server, and a filter of the
# default capacity costs about 70 MB there.
FILTER_CAPACITY = 10_000


@pytest.fixture
def settings():
    return Settings(redis_url="redis://127.0.0.1:1/0", stream_consumer="worker",
                    filter_capacity=FILTER_CAPACITY)


@pytest.fixture
def admin_settings(settings):
    return Settings(**{**settings.__dict__, "admin_token": TOKEN})


@pytest.fixture
def admin_app(any_redis, admin_settings):
    return make_app(any_redis, admin_settings)


@pytest.fixture
def admin(admin_app):
    return admin_app.test_client()


@pytest.fixture
def stack_app(stack_redis, admin_settings):
    return make_app(stack_redis, admin_settings)


def lists_of(app):
    service = app.extensions["fraud_detector"]
    return (IpList(service.client, constants.BLACKLIST, service.settings),
            IpList(service.client, constants.ALLOWLIST, service.settings))


def verdict(client, ip):
    """POST a click from `ip` with a device of its own, so click spam never decides."""
    return post_click(client, device_id=f"device-{ip}", ip=ip).get_json()


def fraud_type(client, ip):
    return verdict(client, ip)["fraud_type"]


def entries(*texts):
    return [parse_entry(text) for text in texts]


# Entries and segments, without Redis.

def test_entry_mapped_ipv4_becomes_ipv4():
    assert parse_entry("::ffff:192.0.2.1").text == "192.0.2.1"
    assert parse_entry("::ffff:10.0.0.0/104").text == "10.0.0.0/8"


def test_entry_single_address_cidr_is_address():
    entry = parse_entry("192.0.2.1/32")

    assert entry.text == "192.0.2.1"
    assert not entry.is_range


def test_entry_with_host_bits_is_rejected():
    with pytest.raises(InvalidField) as error:
        parse_entry("10.1.2.3/8")

    assert "10.0.0.0/8" in error.value.message


def test_entry_key_form_orders_like_numbers():
    texts = ["9.255.255.255", "10.0.0.0", "10.0.0.1", "255.255.255.255", "::", "2001:db8::1"]

    key_forms = [parse_entry(text).first_key for text in texts]

    assert key_forms == sorted(key_forms)


def test_supernets_widest_first():
    assert supernets(parse_entry("10.1.0.0/16"))[:2] == ["0.0.0.0/0", "0.0.0.0/1"]
    assert supernets(parse_entry("10.1.0.0/16"))[-1] == "10.0.0.0/15"
    assert len(supernets(parse_entry("2001:db8::1"))) == 128


def test_segments_take_latest_expiry_of_overlaps():
    segments = build_segments([(0, 100, 50), (10, 20, 0), (15, 30, 70)])

    assert segments == [(0, 9, 50), (10, 20, 0), (21, 30, 70), (31, 100, 50)]


def test_segments_merge_adjacent_equal_expiry():
    assert build_segments([(0, 9, 0), (10, 19, 0), (25, 30, 0)]) == [(0, 19, 0), (25, 30, 0)]


def test_groups_split_at_outermost_ranges():
    groups = group_by_outermost([(10, 20), (0, 100), (200, 300), (150, 160)])

    assert groups == [[(0, 100), (10, 20)], [(150, 160)], [(200, 300)]]


def test_segments_match_brute_force_on_random_cidrs():
    generator = random.Random(7)
    ranges = []
    for _ in range(200):
        length = generator.randint(20, 30)
        network = ipaddress.IPv4Network((generator.getrandbits(12) << 20, length), strict=False)
        expires_at = generator.choice([0, 100, 200, 300])
        ranges.append((int(network.network_address), int(network.broadcast_address), expires_at))

    segments = build_segments(ranges)

    for first, last, expires_at in segments:
        for address in (first, last, (first + last) // 2):
            covering = [exp for low, high, exp in ranges if low <= address <= high]
            expected = 0 if 0 in covering else max(covering)
            assert expires_at == expected
    for (_, last, _), (first, _, _) in zip(segments, segments[1:]):
        assert last < first


# The click check.

def test_ipv4_range_flags_every_address_inside(client, app):
    blacklist, _ = lists_of(app)
    blacklist.add(entries("10.0.0.0/8"))

    inside = [verdict(client, ip) for ip in ("10.0.0.0", "10.1.2.3", "10.255.255.255")]
    outside = [fraud_type(client, ip) for ip in ("9.255.255.255", "11.0.0.0")]

    assert [v["fraud_type"] for v in inside] == ["ip_blacklist"] * 3
    assert [v["evidence"]["ip_match"] for v in inside] == ["blacklist_range"] * 3
    assert outside == ["clean", "clean"]


def test_ipv6_range_flags_every_address_inside(client, app):
    blacklist, _ = lists_of(app)
    blacklist.add(entries("2001:db8::/32"))

    assert fraud_type(client, "2001:db8::") == "ip_blacklist"
    assert fraud_type(client, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff") == "ip_blacklist"
    assert fraud_type(client, "2001:db9::1") == "clean"
    assert fraud_type(client, "2001:db7:ffff::1") == "clean"


def test_ipv4_range_does_not_match_ipv6(client, app):
    blacklist, _ = lists_of(app)
    blacklist.add(entries("0.0.0.0/8"))

    assert fraud_type(client, "::1") == "clean"
    assert fraud_type(client, "0.0.0.1") == "ip_blacklist"


def test_removing_outer_range_keeps_inner(client, app):
    blacklist, _ = lists_of(app)
    blacklist.add(entries("10.0.0.0/8", "10.1.0.0/16"))

    blacklist.remove(entries("10.0.0.0/8"))

    assert fraud_type(client, "10.1.2.3") == "ip_blacklist"
    assert fraud_type(client, "10.2.0.1") == "clean"


def test_removing_inner_range_keeps_outer(client, app):
    blacklist, _ = lists_of(app)
    blacklist.add(entries("10.0.0.0/8", "10.1.0.0/16"))

    blacklist.remove(entries("10.1.0.0/16"))

    assert fraud_type(client, "10.1.2.3") == "ip_blacklist"
    assert fraud_type(client, "10.2.0.1") == "ip_blacklist"


def test_removing_address_keeps_its_neighbour(client, app):
    blacklist, _ = lists_of(app)
    blacklist.add(entries("203.0.113.7", "203.0.113.8"))

    statuses = blacklist.remove(entries("203.0.113.7"))

    assert statuses == ["removed"]
    assert fraud_type(client, "203.0.113.7") == "clean"
    assert fraud_type(client, "203.0.113.8") == "ip_blacklist"


def test_removed_address_leaves_the_filter(app, redis_client):
    blacklist, _ = lists_of(app)
    blacklist.add(entries("203.0.113.7"))

    blacklist.remove(entries("203.0.113.7"))

    assert not redis_client.execute_command("CF.EXISTS", constants.FILTER_KEY, "203.0.113.7")
    assert int(redis_client.get(keys.filter_managed_items())) == 0


def test_managed_address_is_in_filter(app, redis_client):
    blacklist, _ = lists_of(app)

    statuses = blacklist.add(entries("203.0.113.7"))

    assert statuses == ["added"]
    assert redis_client.execute_command("CF.EXISTS", constants.FILTER_KEY, "203.0.113.7")
    assert blacklist.get(parse_entry("203.0.113.7")).in_filter


def test_raw_cf_addnx_still_flags(client, app, redis_client):
    blacklist, _ = lists_of(app)
    blacklist.add(entries("203.0.113.8", "10.0.0.0/8"))
    redis_client.execute_command("CF.ADDNX", constants.FILTER_KEY, "198.51.100.9")

    body = verdict(client, "198.51.100.9")

    assert body["fraud_type"] == "ip_blacklist"
    assert body["evidence"]["ip_match"] == "blacklist_filter"
    assert blacklist.status()["filter"]["unmanaged_items"] == 1


def test_raw_add_survives_removal_of_record(client, app, redis_client):
    blacklist, _ = lists_of(app)
    redis_client.execute_command("CF.ADDNX", constants.FILTER_KEY, "198.51.100.9")
    blacklist.add(entries("198.51.100.9"))

    blacklist.remove(entries("198.51.100.9"))

    assert fraud_type(client, "198.51.100.9") == "ip_blacklist"


def test_readding_extends_expiry(app):
    blacklist, _ = lists_of(app)
    now_ms = blacklist.now_ms()
    blacklist.add(entries("203.0.113.7"), expires_at=now_ms + 60_000)

    statuses = blacklist.add(entries("203.0.113.7"), expires_at=now_ms + 120_000, reason="again")

    record = blacklist.get(parse_entry("203.0.113.7"))
    assert statuses == ["updated"]
    assert record.expires_at == now_ms + 120_000
    assert record.reason == "again"


def test_expired_address_stops_matching(client, app):
    blacklist, _ = lists_of(app)
    blacklist.add(entries("203.0.113.7"), expires_at=blacklist.now_ms() + 300)
    assert fraud_type(client, "203.0.113.7") == "ip_blacklist"

    time.sleep(0.4)

    assert fraud_type(client, "203.0.113.7") == "clean"


def test_expired_range_stops_matching(client, app):
    blacklist, _ = lists_of(app)
    blacklist.add(entries("10.0.0.0/8"), expires_at=blacklist.now_ms() + 300)
    assert fraud_type(client, "10.1.2.3") == "ip_blacklist"

    time.sleep(0.4)

    assert fraud_type(client, "10.1.2.3") == "clean"


def test_expired_outer_range_keeps_live_inner(client, app):
    blacklist, _ = lists_of(app)
    blacklist.add(entries("10.0.0.0/8"), expires_at=blacklist.now_ms() + 300)
    blacklist.add(entries("10.1.0.0/16"))

    time.sleep(0.4)

    assert fraud_type(client, "10.1.2.3") == "ip_blacklist"
    assert fraud_type(client, "10.2.0.1") == "clean"


def test_sweep_removes_expired_entries(app, redis_client):
    blacklist, _ = lists_of(app)
    blacklist.add(entries("203.0.113.7", "10.0.0.0/8"), expires_at=blacklist.now_ms() + 100)
    blacklist.add(entries("203.0.113.8"))
    time.sleep(0.2)

    removed = blacklist.sweep()

    assert removed == 2
    assert blacklist.get(parse_entry("203.0.113.7")) is None
    assert blacklist.get(parse_entry("10.0.0.0/8")) is None
    assert not redis_client.execute_command("CF.EXISTS", constants.FILTER_KEY, "203.0.113.7")
    assert int(redis_client.get(keys.filter_managed_items())) == 1


def test_allowlisted_address_in_blacklisted_range_is_clean(client, app):
    blacklist, allowlist = lists_of(app)
    blacklist.add(entries("10.0.0.0/8"))
    allowlist.add(entries("10.9.9.9"))

    body = verdict(client, "10.9.9.9")

    assert body["fraud_type"] == "clean"
    assert body["evidence"]["ip_match"] == "allowlist"
    assert fraud_type(client, "10.9.9.10") == "ip_blacklist"


def test_allowlisted_range_wins_over_blacklisted_address(client, app):
    blacklist, allowlist = lists_of(app)
    blacklist.add(entries("192.0.2.10"))
    allowlist.add(entries("192.0.2.0/24"))

    assert fraud_type(client, "192.0.2.10") == "clean"


def test_allowlist_does_not_stop_click_spam(client, app):
    _, allowlist = lists_of(app)
    allowlist.add(entries("192.0.2.10"))

    verdicts = [post_click(client, ip="192.0.2.10", transaction_id=f"t{i}").get_json()
                for i in range(3)]

    assert verdicts[-1]["fraud_type"] == "click_spam"


def test_region_rebuilds_equal_full_rebuild(app, redis_client):
    blacklist, _ = lists_of(app)
    generator = random.Random(11)
    pool = [str(ipaddress.IPv4Network((generator.getrandbits(6) << 26, generator.randint(6, 12)),
                                      strict=False)) for _ in range(40)]
    segments_key = keys.list_segments(constants.BLACKLIST)

    for step in range(80):
        entry = parse_entry(generator.choice(pool))
        if step % 3 == 2:
            blacklist.remove([entry])
        else:
            blacklist.add([entry], expires_at=generator.choice([0, blacklist.now_ms() + 60_000]))
    by_regions = sorted(redis_client.zrange(segments_key, 0, -1))
    rebuild_segments(redis_client, constants.BLACKLIST)

    assert by_regions == sorted(redis_client.zrange(segments_key, 0, -1))


# The Cuckoo filter: false positives, safe removal, a full filter. These
# need RedisBloom: the fakeredis filter keeps longer fingerprints and never fills.

def filter_false_positives(redis_client, count, seed=5):
    """Return `count` addresses that CF.EXISTS reports although they were never added."""
    generator = random.Random(seed)
    found = []
    while len(found) < count:
        candidates = [str(ipaddress.IPv4Address(generator.getrandbits(32))) for _ in range(1000)]
        hits = redis_client.execute_command("CF.MEXISTS", constants.FILTER_KEY, *candidates)
        found += [ip for ip, hit in zip(candidates, hits) if hit]
    return found[:count]


@pytest.fixture
def crowded_blacklist(stack_app, stack_redis):
    """A blacklist of 2,000 addresses in a small filter, so that false positives are common."""
    stack_redis.delete(constants.FILTER_KEY)
    stack_redis.execute_command("CF.RESERVE", constants.FILTER_KEY, 2048, "BUCKETSIZE", 4)
    blacklist, _ = lists_of(stack_app)
    generator = random.Random(3)
    listed = [str(ipaddress.IPv4Address((172 << 24) + generator.getrandbits(20))) for _ in range(2000)]
    blacklist.add(entries(*listed))
    return blacklist, listed


def test_filter_false_positive_is_clean(stack_app, crowded_blacklist, stack_redis):
    client = stack_app.test_client()

    suspects = filter_false_positives(stack_redis, 20)

    assert [fraud_type(client, ip) for ip in suspects] == ["clean"] * 20


def test_removing_unlisted_address_keeps_filter(stack_app, crowded_blacklist, stack_redis):
    blacklist, listed = crowded_blacklist
    suspects = filter_false_positives(stack_redis, 20)

    statuses = blacklist.remove(entries(*suspects))

    hits = stack_redis.execute_command("CF.MEXISTS", constants.FILTER_KEY, *listed)
    assert statuses == ["not_found"] * 20
    assert all(hits)


def test_full_filter_is_reported_and_clicks_served(stack_app, stack_redis):
    stack_redis.delete(constants.FILTER_KEY)
    stack_redis.execute_command("CF.RESERVE", constants.FILTER_KEY, 4, "BUCKETSIZE", 1, "EXPANSION", 0)
    admin = stack_app.test_client()
    addresses = [f"203.0.113.{i}" for i in range(1, 11)]

    answers = [admin.post("/admin/blacklist/entries", json={"entry": ip}, headers=AUTH).get_json()
               for ip in addresses]

    full = [answer for answer in answers if answer["in_filter"] is False]
    assert full
    assert "is full" in full[0]["warning"]
    assert all(answer["status"] == "added" for answer in answers)
    assert [fraud_type(admin, ip) for ip in addresses] == ["ip_blacklist"] * 10
    assert fraud_type(admin, "198.51.100.1") == "clean"


# FireHOL level 1.

def firehol_lines():
    with open(f"{DATA_DIR}/firehol_level1.netset", encoding="utf-8") as source:
        return source.read().splitlines()


def test_firehol_import_blocks_listed_ranges(admin, admin_app):
    started = time.monotonic()
    response = admin.post("/admin/blacklist/import", data="\n".join(firehol_lines()),
                          headers={**AUTH, "Content-Type": "text/plain"})
    seconds = time.monotonic() - started
    admin.post("/admin/allowlist/entries", json={"entry": "10.9.9.9"}, headers=AUTH)

    summary = response.get_json()
    assert response.status_code == 200
    assert summary["added"] == 2892
    assert summary["invalid"] == 0
    assert seconds < 10
    assert fraud_type(admin, "10.1.2.3") == "ip_blacklist"
    assert fraud_type(admin, "8.8.8.8") == "clean"
    assert fraud_type(admin, "10.9.9.9") == "clean"


def test_import_reports_bad_lines_by_number(admin):
    data_lines = [line for line in firehol_lines() if not line.startswith("#")]
    lines = data_lines[:100] + ["not-an-address", "10.1.2.3/8", "", "# comment",
                                       "1.2.3.4 ; inline comment", "300.1.1.1"]

    summary = admin.post("/admin/blacklist/import", data="\n".join(lines),
                         headers={**AUTH, "Content-Type": "text/plain"}).get_json()

    assert summary["invalid"] == 3
    assert [error["line"] for error in summary["errors"]] == [101, 102, 106]
    assert "10.0.0.0/8" in summary["errors"][1]["message"]
    assert summary["added"] == len(lines) - 3 - 2


def test_reimport_counts_already_present(admin):
    body = "192.0.2.1\n10.0.0.0/8\n"
    admin.post("/admin/blacklist/import", data=body, headers={**AUTH, "Content-Type": "text/plain"})

    summary = admin.post("/admin/blacklist/import", data=body,
                         headers={**AUTH, "Content-Type": "text/plain"}).get_json()

    assert summary["added"] == 0
    assert summary["already_present"] == 2


# The admin API.

def test_admin_api_off_without_token(client):
    response = client.get("/admin/blacklist/entries")

    assert response.status_code == 404


def test_admin_api_rejects_missing_token(admin):
    response = admin.get("/admin/blacklist/entries")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_admin_api_rejects_wrong_token(admin):
    response = admin.get("/admin/blacklist/entries", headers={"Authorization": "Bearer wrong"})

    assert response.status_code == 401


def test_admin_api_rejects_other_scheme(admin):
    response = admin.get("/admin/blacklist/entries", headers={"Authorization": f"Basic {TOKEN}"})

    assert response.status_code == 401


def test_admin_add_get_remove(admin):
    added = admin.post("/admin/blacklist/entries", headers=AUTH,
                       json={"entry": "2001:db8::/32", "reason": "test", "expires_in_sec": 60})
    # Without expires_in_sec the entry never expires, the latest expiry of all.
    again = admin.post("/admin/blacklist/entries", headers=AUTH, json={"entry": "2001:db8::/32"})
    fetched = admin.get("/admin/blacklist/entries/2001:db8::/32", headers=AUTH)
    removed = admin.delete("/admin/blacklist/entries/2001:db8::/32", headers=AUTH)
    missing = admin.delete("/admin/blacklist/entries/2001:db8::/32", headers=AUTH)

    assert added.status_code == 201
    assert again.status_code == 200
    assert again.get_json()["status"] == "updated"
    assert added.get_json()["expires_at_ms"] > 0
    assert fetched.get_json()["reason"] == "test"
    assert fetched.get_json()["expires_at_ms"] is None
    assert removed.get_json()["status"] == "removed"
    assert missing.status_code == 404


def test_admin_not_found_names_unmanaged_items(admin, redis_client):
    redis_client.execute_command("CF.ADDNX", constants.FILTER_KEY, "198.51.100.9")

    response = admin.delete("/admin/blacklist/entries/198.51.100.9", headers=AUTH)

    assert response.status_code == 404
    assert "CF.DEL ip_cf 198.51.100.9" in response.get_json()["message"]


@pytest.mark.parametrize("body, field", [
    ({"entry": "10.1.2.3/8"}, "entry"),
    ({"entry": "example.com"}, "entry"),
    ({"entry": "10.0.0.0/8", "expires_in_sec": 0}, "expires_in_sec"),
    ({"entry": "10.0.0.0/8", "expires_in_sec": "soon"}, "expires_in_sec"),
    ({"entry": "10.0.0.0/8", "reason": "two\nlines"}, "reason"),
])
def test_admin_bad_input_names_field(admin, body, field):
    response = admin.post("/admin/blacklist/entries", json=body, headers=AUTH)

    assert response.status_code == 400
    assert response.get_json()["field"] == field


def test_admin_list_pages_in_address_order(admin):
    for entry in ("192.0.2.9", "10.0.0.0/8", "2001:db8::1", "192.0.2.1"):
        admin.post("/admin/allowlist/entries", json={"entry": entry}, headers=AUTH)

    first = admin.get("/admin/allowlist/entries?limit=3", headers=AUTH).get_json()
    second = admin.get(f"/admin/allowlist/entries?limit=3&after={first['next_after']}",
                       headers=AUTH).get_json()

    assert [e["entry"] for e in first["entries"]] == ["10.0.0.0/8", "192.0.2.1", "192.0.2.9"]
    assert [e["entry"] for e in second["entries"]] == ["2001:db8::1"]
    assert second["next_after"] is None


def test_admin_lookup_lists_matching_entries(admin):
    for entry in ("10.0.0.0/8", "10.1.0.0/16", "10.1.2.3"):
        admin.post("/admin/blacklist/entries", json={"entry": entry}, headers=AUTH)

    report = admin.get("/admin/blacklist/lookup?ip=10.1.2.3", headers=AUTH).get_json()

    assert report["listed"] is True
    assert sorted(m["entry"] for m in report["matches"]) == ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3"]
    assert report["in_filter"] is True


def test_admin_sweep_and_status(admin, admin_app):
    blacklist, _ = lists_of(admin_app)
    blacklist.add(entries("203.0.113.7"), expires_at=blacklist.now_ms() + 50)
    time.sleep(0.1)

    swept = admin.post("/admin/blacklist/sweep", headers=AUTH).get_json()
    status = admin.get("/admin/blacklist/status", headers=AUTH).get_json()

    assert swept["removed"] == 1
    assert status["addresses"] == 0
    assert status["filter"]["items"] == 0


# The CLI.

def test_cli_add_lookup_remove(admin_app):
    runner = admin_app.test_cli_runner()

    added = runner.invoke(args=["blacklist", "add", "10.0.0.0/8", "203.0.113.7", "--reason", "cli"])
    looked_up = runner.invoke(args=["blacklist", "lookup", "10.1.2.3"])
    listed = runner.invoke(args=["blacklist", "list"])
    removed = runner.invoke(args=["blacklist", "remove", "10.0.0.0/8"])
    missing = runner.invoke(args=["blacklist", "get", "10.0.0.0/8"])

    assert added.exit_code == 0, added.output
    assert "10.0.0.0/8: added" in added.output
    assert "10.0.0.0/8" in looked_up.output
    assert listed.output.splitlines()[0].startswith("10.0.0.0/8\t")
    assert "10.0.0.0/8: removed" in removed.output
    assert missing.exit_code != 0


def test_cli_import_prints_summary(admin_app, tmp_path):
    path = tmp_path / "blocklist.netset"
    path.write_text("# a list\n10.0.0.0/8\n192.0.2.1\nbad entry\n192.0.2.1\n")
    runner = admin_app.test_cli_runner()

    result = runner.invoke(args=["blacklist", "import", str(path), "--expires-in", "3600"])

    assert result.exit_code == 0, result.output
    assert "2 added, 1 already present, 1 invalid" in result.output
    assert "line 4:" in result.output


def test_cli_rejects_bad_entry(admin_app):
    result = admin_app.test_cli_runner().invoke(args=["allowlist", "add", "10.1.2.3/8"])

    assert result.exit_code == 2
    assert "10.0.0.0/8" in result.output


def test_cli_refuses_embedded_server(admin_app):
    admin_app.extensions["fraud_detector"].embedded = object()

    result = admin_app.test_cli_runner().invoke(args=["blacklist", "status"])

    assert result.exit_code == 1
    assert "REDIS_URL" in result.output
