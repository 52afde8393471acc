"""Builders of the Redis keys that the service owns.

`docs/design.md` lists every key with its type, writer and expiry. All keys
but `ip_cf` and the stream start with `constants.KEY_PREFIX`, so a device id
cannot collide with a key of the service.
"""

import constants


def device_window(device_id):
    """Return the key of the sorted set of a device's recent clicks."""
    return f"{constants.KEY_PREFIX}device:{device_id}"


def event_series(fraud_type):
    """Return the key of the time series that counts events of `fraud_type`."""
    return f"{constants.KEY_PREFIX}events:{fraud_type}"


def sweep_lock():
    """Return the key of the lock that lets one worker at a time sweep expired list entries."""
    return f"{constants.KEY_PREFIX}lists:sweep_lock"


def consumer_heartbeats():
    """Return the key of the sorted set of worker names by last heartbeat (ms)."""
    return f"{constants.KEY_PREFIX}consumers"


def stream_owner():
    """Return the key of the string that names the consumer kind allowed to count events."""
    return f"{constants.KEY_PREFIX}stream_consumer"


def gears_applied_id():
    """Return the key of the string that contains the last stream entry id a gear applied."""
    return f"{constants.KEY_PREFIX}gears:applied"


def gears_handover_id():
    """Return the key of the string that contains the worker group's last-delivered id at hand-over."""
    return f"{constants.KEY_PREFIX}gears:handover"


def gears_failures():
    """Return the key of the count of stream entries that a gear failed to apply."""
    return f"{constants.KEY_PREFIX}gears:failures"


def gears_errors():
    """Return the key of the capped stream of gear failures: entry_id, error, consumer."""
    return f"{constants.KEY_PREFIX}gears:errors"


def registration_lock():
    """Return the key of the lock that serialises stream consumer registration."""
    return f"{constants.KEY_PREFIX}setup:lock"


def list_addresses(list_name):
    """Return the key of the hash of a list's single addresses: address -> record."""
    return f"{constants.KEY_PREFIX}{list_name}:addresses"


def list_ranges(list_name):
    """Return the key of the hash of a list's CIDR ranges: range -> record."""
    return f"{constants.KEY_PREFIX}{list_name}:ranges"


def list_entries(list_name):
    """Return the key of the sorted set of all entries of a list in address order."""
    return f"{constants.KEY_PREFIX}{list_name}:entries"


def list_expiries(list_name):
    """Return the key of the sorted set of a list's expiring entries, by expiry in ms."""
    return f"{constants.KEY_PREFIX}{list_name}:expiries"


def list_segments(list_name):
    """Return the key of the sorted set of disjoint segments that a list's ranges cover."""
    return f"{constants.KEY_PREFIX}{list_name}:segments"


def filter_managed_items():
    """Return the key of the count of blacklist addresses that own an item in `ip_cf`."""
    return f"{constants.KEY_PREFIX}blacklist:filter_items"


def filter_probe():
    """Return the key of the scratch Cuckoo filter used to learn how CF.INFO counts deletions."""
    return f"{constants.KEY_PREFIX}filter_probe"
