"""Rebuilding the segments index of a list from its range records.

The records in the ranges hash are authoritative. The segments sorted set is
derived from them, so it can always be rebuilt. A rebuild reads records and
writes segments inside one WATCH/MULTI transaction on the ranges hash and the
segments key, so a concurrent change of the ranges makes it start over instead
of writing segments that are already out of date.
"""

import logging

import redis

import constants
import keys
from ip_lists.entries import parse_entry, supernets
from ip_lists.records import parse_record, server_time_ms
from ip_lists.segments import build_segments, group_by_outermost, segment_member

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 20  # rebuilds started over after concurrent changes, before giving up
MAX_REGIONS = 32  # changed ranges rebuilt region by region, above which all is rebuilt


class IndexBusy(RuntimeError):
    """The ranges kept changing while the segments index was being rebuilt."""


def _read_ranges(texts, values, now_ms):
    """Return (family, first, last, live, expires_at) of the range records among `texts`."""
    ranges = []
    for text, value in zip(texts, values):
        if value is None:
            continue
        entry = parse_entry(text)
        record = parse_record(text, value)
        ranges.append((entry.family, entry.first, entry.last,
                       not record.expired(now_ms), record.expires_at))
    return ranges


def _segment_members(ranges):
    """Return the segment members that the live ranges cover.

    Every range with a record, expired or not, takes part in the grouping,
    so that segments never span two outermost ranges, even after an outer
    range expires.
    """
    members = []
    for family in (4, 6):
        items = [item[1:] for item in ranges if item[0] == family]
        for group in group_by_outermost(items):
            live = [(first, last, expires_at) for first, last, alive, expires_at in group if alive]
            members += [segment_member(family, segment) for segment in build_segments(live)]
    return members


def _plan_full(pipe, list_name, now_ms):
    records = pipe.hgetall(keys.list_ranges(list_name))
    members = _segment_members(_read_ranges(list(records), list(records.values()), now_ms))
    return [(None, members)]


def _region_of(pipe, list_name, entry):
    """Return the outermost range with a record that contains `entry`, or `entry` itself."""
    candidates = supernets(entry)
    if not candidates:
        return entry
    for text, value in zip(candidates, pipe.hmget(keys.list_ranges(list_name), candidates)):
        if value is not None:
            return parse_entry(text)
    return entry


def _plan_regions(pipe, list_name, changed, now_ms):
    regions = {}
    for entry in changed:
        region = _region_of(pipe, list_name, entry)
        regions[region.text] = region
    # A region inside another one is rebuilt with it.
    outermost = [
        region for region in regions.values()
        if not any(other is not region and other.family == region.family
                   and other.first <= region.first and region.last <= other.last
                   for other in regions.values())
    ]

    plan = []
    for region in outermost:
        bounds = (f"[{region.first_key}", f"({region.last_key};")
        members = pipe.zrangebylex(keys.list_entries(list_name), *bounds)
        texts = [text for text in (member.split(":", 1)[1] for member in members) if "/" in text]
        values = pipe.hmget(keys.list_ranges(list_name), texts) if texts else []
        segment_members = _segment_members(_read_ranges(texts, values, now_ms))
        plan.append((bounds, segment_members))
    return plan


def rebuild_segments(client, list_name, changed=None):
    """Rebuild the segments that `changed` ranges affect, or all segments when None.

    Returns the number of segment members written.

    Raises:
        IndexBusy: the ranges changed on every one of MAX_ATTEMPTS tries.
    """
    if changed is not None and len(changed) > MAX_REGIONS:
        changed = None
    ranges_key, segments_key = keys.list_ranges(list_name), keys.list_segments(list_name)

    for _ in range(MAX_ATTEMPTS):
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(ranges_key, segments_key)
                now_ms = server_time_ms(pipe)
                if changed is None:
                    plan = _plan_full(pipe, list_name, now_ms)
                else:
                    plan = _plan_regions(pipe, list_name, changed, now_ms)

                pipe.multi()
                written = 0
                for bounds, members in plan:
                    if bounds is None:
                        pipe.delete(segments_key)
                    else:
                        pipe.zremrangebylex(segments_key, *bounds)
                    for start in range(0, len(members), constants.LIST_CHUNK_SIZE):
                        chunk = members[start:start + constants.LIST_CHUNK_SIZE]
                        pipe.zadd(segments_key, dict.fromkeys(chunk, 0))
                    written += len(members)
                pipe.execute()
                return written
            except redis.WatchError:
                logger.debug("Ranges of the %s changed during the rebuild, so it starts over", list_name)
    raise IndexBusy(
        f"the ranges of the {list_name} changed during each of {MAX_ATTEMPTS} attempts "
        "to rebuild its index"
    )
