"""Builders of the Redis keys that the service owns.

`docs/design.md` lists every key with its type, writer and expiry. All keys
but `ip_cf` and the stream start with `constants.KEY_PREFIX`, so a device id
cannot collide with a key of the service.
"""

import constants


def device_window(device_id):
    """Return the key of the sorted set that holds a device's recent clicks."""
    return f"{constants.KEY_PREFIX}device:{device_id}"


def event_series(fraud_type):
    """Return the key of the time series that counts events of `fraud_type`."""
    return f"{constants.KEY_PREFIX}events:{fraud_type}"


def consumer_heartbeats():
    """Return the key of the sorted set of worker names by last heartbeat (ms)."""
    return f"{constants.KEY_PREFIX}consumers"
