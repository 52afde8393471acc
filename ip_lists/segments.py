"""The lookup index of the ranges of a list: disjoint segments with an expiry.

The click check finds the one segment that can contain an address with a
single ZRANGE ... BYLEX REV LIMIT 0 1, so ranges may overlap in the list but
never in the index. A segment carries the latest expiry of the ranges that
cover it, where 0 means never. Therefore a segment stops matching exactly when
every range that covers it has expired, and no sweep is needed for correctness.
"""

import heapq

from ip_lists.entries import address_key_of
from ip_lists.records import NEVER


def expiry_rank(expires_at):
    """Return a sort key under which NEVER is later than any time."""
    return float("inf") if expires_at == NEVER else expires_at


def build_segments(ranges):
    """Return the disjoint segments that the ranges of one address family cover.

    Args:
        ranges: (first, last, expires_at) tuples, with addresses as integers.
            They may overlap in any way.

    Returns:
        (first, last, expires_at) tuples in address order, where expires_at is
        the latest expiry among the ranges that cover the segment. Adjacent
        segments with the same expiry are merged.
    """
    ranges = sorted(ranges)
    bounds = sorted({first for first, _, _ in ranges} | {last + 1 for _, last, _ in ranges})
    segments = []
    covering = []  # heap of (-expiry rank, last, expires_at)
    next_range = 0
    for position, start in enumerate(bounds[:-1]):
        while next_range < len(ranges) and ranges[next_range][0] == start:
            _, last, expires_at = ranges[next_range]
            heapq.heappush(covering, (-expiry_rank(expires_at), last, expires_at))
            next_range += 1
        # Ranges that ended before `start` are dropped when they reach the top.
        # A buried one never decides, because the top outranks it.
        while covering and covering[0][1] < start:
            heapq.heappop(covering)
        if not covering:
            continue
        end = bounds[position + 1] - 1
        expires_at = covering[0][2]
        if segments and segments[-1][1] == start - 1 and segments[-1][2] == expires_at:
            segments[-1] = (segments[-1][0], end, expires_at)
        else:
            segments.append((start, end, expires_at))
    return segments


def group_by_outermost(ranges):
    """Split CIDR ranges of one family into groups, one per outermost range.

    Two CIDR ranges are either disjoint or one contains the other, so every
    range lies inside exactly one outermost range. Segments are built per
    group, and so never span two outermost ranges. A later rebuild of one
    outermost range can then replace its segments by their first address
    alone (ZREMRANGEBYLEX) without cutting a segment that starts outside it.

    Args:
        ranges: (first, last, ...) tuples.

    Returns:
        Lists of the input tuples. The first tuple of each list is the outermost range.
    """
    groups = []
    group_last = -1
    for item in sorted(ranges, key=lambda item: (item[0], -item[1])):
        if item[0] > group_last:
            groups.append([])
            group_last = item[1]
        groups[-1].append(item)
    return groups


def segment_member(family, segment):
    """Return the sorted-set member of a segment: first key, last key, expires_at."""
    first, last, expires_at = segment
    return f"{address_key_of(family, first)}:{address_key_of(family, last)}:{expires_at}"
