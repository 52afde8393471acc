"""Reads and writes of one list, the blacklist or the allowlist.

Entries are written in chunks by `lua/add_entries.lua` and
`lua/remove_entries.lua`. After a change of ranges the segments index is
rebuilt from the range records (`ip_lists.range_index`), so a range takes
effect in the click check right after its record is written.
"""

import logging

import constants
import keys
import lua_scripts
import setup
from ip_lists import cuckoo
from ip_lists.entries import parse_entry, supernets
from ip_lists.range_index import rebuild_segments
from ip_lists.records import NEVER, parse_record, server_time_ms

logger = logging.getLogger(__name__)

FILTER_FULL = "filter_full"


def chunks(items, size=constants.LIST_CHUNK_SIZE):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class IpList:
    """One list of addresses and CIDR ranges: the blacklist or the allowlist.

    Args:
        client: a redis-py client with decode_responses=True.
        name: `constants.BLACKLIST` or `constants.ALLOWLIST`.
        settings: the `config.Settings`, used to create `ip_cf` when it is missing.
    """

    def __init__(self, client, name, settings):
        if name not in constants.IP_LISTS:
            raise ValueError(f"unknown list {name!r}: use one of {', '.join(constants.IP_LISTS)}")
        self.client = client
        self.name = name
        self.settings = settings
        self.uses_filter = name == constants.BLACKLIST
        self._add_script = lua_scripts.register(client, "add_entries.lua")
        self._remove_script = lua_scripts.register(client, "remove_entries.lua")

    def _script_keys(self, ranges):
        records = keys.list_ranges(self.name) if ranges else keys.list_addresses(self.name)
        return [records, keys.list_entries(self.name), keys.list_expiries(self.name),
                constants.FILTER_KEY, keys.filter_managed_items()]

    def now_ms(self):
        return server_time_ms(self.client)

    def add(self, entries, expires_at=NEVER, reason="", rebuild=True):
        """Add entries, or update those already present, and return a status per entry.

        A status is 'added', 'updated' or 'filter_full'. A 'filter_full'
        address is in the list and blacklisted, but not in `ip_cf`.

        Args:
            entries: `ip_lists.entries.Entry` objects.
            expires_at: expiry in ms since the epoch, or NEVER.
            reason: text stored with new entries and replacing the reason of
                present ones when not empty.
            rebuild: rebuild the segments index of changed ranges. An import
                passes False and rebuilds everything once at the end.
        """
        if self.uses_filter and any(not entry.is_range for entry in entries):
            # CF.ADD would create a missing filter with the module's defaults.
            if not self.client.exists(constants.FILTER_KEY):
                setup.ensure_filter(self.client, self.settings)

        statuses = [None] * len(entries)
        for is_range in (False, True):
            positions = [i for i, entry in enumerate(entries) if entry.is_range == is_range]
            use_filter = self.uses_filter and not is_range
            for chunk in chunks(positions):
                args = [1 if use_filter else 0, expires_at, reason]
                for i in chunk:
                    args += [entries[i].text, entries[i].index_member]
                replies = self._add_script(keys=self._script_keys(is_range), args=args)
                for i, status in zip(chunk, replies):
                    statuses[i] = status

        changed = [entry for entry in entries if entry.is_range]
        if changed and rebuild:
            rebuild_segments(self.client, self.name, changed)
        full = statuses.count(FILTER_FULL)
        if full:
            logger.warning(
                "Cuckoo filter %s is full: %d addresses were added to the %s but not to "
                "the filter (the click check still flags them)",
                constants.FILTER_KEY, full, self.name,
            )
        return statuses

    def remove(self, entries, expired_before=0):
        """Remove entries and return a status per entry: 'removed', 'not_found' or 'kept'.

        Args:
            expired_before: 0, or a time in ms: then only entries that expired
                at or before it are removed, and the others are 'kept'.
        """
        statuses = [None] * len(entries)
        for is_range in (False, True):
            positions = [i for i, entry in enumerate(entries) if entry.is_range == is_range]
            for chunk in chunks(positions):
                args = [expired_before]
                for i in chunk:
                    args += [entries[i].text, entries[i].index_member]
                replies = self._remove_script(keys=self._script_keys(is_range), args=args)
                for i, status in zip(chunk, replies):
                    statuses[i] = status

        removed_ranges = [entry for entry, status in zip(entries, statuses)
                          if entry.is_range and status == "removed"]
        if removed_ranges:
            rebuild_segments(self.client, self.name, removed_ranges)
        return statuses

    def sweep(self):
        """Remove the expired entries, rebuild the whole segments index and return the count removed."""
        now_ms = self.now_ms()
        expired = self.client.zrangebyscore(keys.list_expiries(self.name), 1, now_ms)
        statuses = self.remove([parse_entry(text) for text in expired], expired_before=now_ms)
        rebuild_segments(self.client, self.name)
        removed = statuses.count("removed")
        if removed:
            logger.info("Removed %d expired entries from the %s", removed, self.name)
        return removed

    def has_expired_entries(self):
        """Return True when an entry has expired and waits for the sweep (one ZRANGEBYSCORE)."""
        return bool(self.client.zrangebyscore(
            keys.list_expiries(self.name), 1, self.now_ms(), start=0, num=1
        ))

    def get(self, entry):
        """Return the `Record` of an entry, or None when the list does not hold it."""
        records = keys.list_ranges(self.name) if entry.is_range else keys.list_addresses(self.name)
        value = self.client.hget(records, entry.text)
        return None if value is None else parse_record(entry.text, value)

    def matches(self, address):
        """Return the records of `address` and of every range that contains it, expired or not."""
        found = []
        value = self.client.hget(keys.list_addresses(self.name), address.text)
        if value is not None:
            found.append(parse_record(address.text, value))
        containing = supernets(address)
        values = self.client.hmget(keys.list_ranges(self.name), containing)
        found += [parse_record(text, value)
                  for text, value in zip(containing, values) if value is not None]
        return found

    def page(self, after=None, limit=constants.ADMIN_LIST_LIMIT):
        """Return up to `limit` records in address order, and the entry to pass as `after` next.

        The second value is None on the last page.
        """
        low = f"({after.index_member}" if after else "-"
        members = self.client.zrangebylex(keys.list_entries(self.name), low, "+", start=0, num=limit + 1)
        texts = [member.split(":", 1)[1] for member in members[:limit]]
        addresses = [text for text in texts if "/" not in text]
        ranges = [text for text in texts if "/" in text]

        values = {}
        if addresses:
            values.update(zip(addresses, self.client.hmget(keys.list_addresses(self.name), addresses)))
        if ranges:
            values.update(zip(ranges, self.client.hmget(keys.list_ranges(self.name), ranges)))
        records = [parse_record(text, values[text]) for text in texts if values[text] is not None]
        next_after = texts[-1] if len(members) > limit else None
        return records, next_after

    def status(self):
        """Return the sizes of the list and, for the blacklist, of the Cuckoo filter."""
        now_ms = self.now_ms()
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hlen(keys.list_addresses(self.name))
            pipe.hlen(keys.list_ranges(self.name))
            pipe.zcard(keys.list_segments(self.name))
            pipe.zcount(keys.list_expiries(self.name), 1, now_ms)
            addresses, ranges, segments, expired = pipe.execute()
        report = {
            "list": self.name,
            "addresses": addresses,
            "ranges": ranges,
            "segments": segments,
            "expired_not_swept": expired,
        }
        if self.uses_filter:
            count_is_current = cuckoo.inserted_count_is_current(self.client)
            report["filter"] = cuckoo.filter_status(self.client, count_is_current).as_dict()
        return report
