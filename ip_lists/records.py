"""The record stored with each list entry.

A record is the string "expires_at|in_filter|added_at|reason". The expiry and
the addition time are in ms since the epoch, and expiry 0 means never.
in_filter is 1 when the entry owns an item of the Cuckoo filter `ip_cf`. The
reason is free text. The Lua scripts read and write the same format.
"""

import dataclasses

NEVER = 0


@dataclasses.dataclass(frozen=True)
class Record:
    entry: str
    expires_at: int  # ms since the epoch, or NEVER
    in_filter: bool  # the entry owns an item of ip_cf (blacklist addresses only)
    added_at: int  # ms since the epoch
    reason: str

    def expired(self, now_ms):
        return self.expires_at != NEVER and self.expires_at <= now_ms

    def as_dict(self, list_name, now_ms):
        """Return the record as the admin API and the CLI show it."""
        fields = {
            "entry": self.entry,
            "list": list_name,
            "kind": "range" if "/" in self.entry else "address",
            "reason": self.reason,
            "added_at_ms": self.added_at,
            "expires_at_ms": self.expires_at or None,
            "expired": self.expired(now_ms),
        }
        if fields["kind"] == "address" and list_name == "blacklist":
            fields["in_filter"] = self.in_filter
        return fields


def parse_record(entry, value):
    """Return the `Record` stored as `value` for `entry`."""
    expires_at, in_filter, added_at, reason = value.split("|", 3)
    return Record(entry, int(expires_at), in_filter == "1", int(added_at), reason)


def server_time_ms(client):
    """Return the Redis server's time in ms, the clock that expiries are compared with."""
    seconds, microseconds = client.time()
    return seconds * 1000 + microseconds // 1000
