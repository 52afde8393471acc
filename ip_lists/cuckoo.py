"""How many items of the Cuckoo filter `ip_cf` no blacklist record accounts for.

Operators may add addresses with a raw `CF.ADDNX ip_cf <ip>`, which leaves no
record. The click check trusts a filter hit that no record explains only while
such unmanaged items exist: their number is the filter's current item count
minus the count of records that own an item (`keys.filter_managed_items()`).

RedisBloom's CF.INFO "Number of items inserted" is the current count, because
CF.DEL decrements it. The fakeredis emulation of the embedded server counts
insertions and deletions apart, so there the current count is inserted minus
deleted. `inserted_count_is_current` finds out which rule the server follows.
"""

import dataclasses

import constants
import keys

PROBE_ITEM = "probe"


def inserted_count_is_current(client):
    """Add and delete one item of a scratch filter and return whether CF.INFO's
    inserted count dropped back to 0, as it does in RedisBloom.
    """
    probe = keys.filter_probe()
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(probe)
        pipe.execute_command("CF.ADD", probe, PROBE_ITEM)
        pipe.execute_command("CF.DEL", probe, PROBE_ITEM)
        pipe.execute_command("CF.INFO", probe)
        pipe.delete(probe)
        info = pipe.execute()[3]
    return _info_field(info, "Number of items inserted") == 0


# Attributes of redis-py's CFInfo, which replaces the reply once `client.cf()` has run.
CFINFO_ATTRIBUTES = {
    "Number of items inserted": "insertedNum",
    "Number of items deleted": "deletedNum",
    "Bucket size": "bucketSize",
    "Number of buckets": "bucketNum",
    "Number of filters": "filterNum",
    "Expansion rate": "expansionRate",
}


def _info_field(info, name):
    """Return a field of a CF.INFO reply: a flat list, a dict or a redis-py CFInfo."""
    if isinstance(info, dict):
        return int(info[name])
    if isinstance(info, (list, tuple)):
        return int(dict(zip(info[::2], info[1::2]))[name])
    return int(getattr(info, CFINFO_ATTRIBUTES[name]))


@dataclasses.dataclass(frozen=True)
class FilterStatus:
    exists: bool
    items: int  # items in the filter now
    managed_items: int  # items owned by blacklist records
    bucket_size: int = 0
    buckets: int = 0
    filters: int = 0  # sub-filters: 1 plus one per expansion
    expansion: int = 0

    @property
    def unmanaged_items(self):
        """Items that no record accounts for, such as raw CF.ADDNX additions."""
        return max(self.items - self.managed_items, 0)

    def as_dict(self):
        return {
            "key": constants.FILTER_KEY,
            "exists": self.exists,
            "items": self.items,
            "managed_items": self.managed_items,
            "unmanaged_items": self.unmanaged_items,
            "bucket_size": self.bucket_size,
            "buckets": self.buckets,
            "sub_filters": self.filters,
            "expansion": self.expansion,
        }


def filter_status(client, count_is_current):
    """Return the `FilterStatus` of `ip_cf`.

    Args:
        count_is_current: the result of `inserted_count_is_current`.
    """
    managed = int(client.get(keys.filter_managed_items()) or 0)
    if not client.exists(constants.FILTER_KEY):
        return FilterStatus(False, 0, managed)
    info = client.execute_command("CF.INFO", constants.FILTER_KEY)
    items = _info_field(info, "Number of items inserted")
    if not count_is_current:
        items -= _info_field(info, "Number of items deleted")
    return FilterStatus(
        exists=True,
        items=items,
        managed_items=managed,
        bucket_size=_info_field(info, "Bucket size"),
        buckets=_info_field(info, "Number of buckets"),
        filters=_info_field(info, "Number of filters"),
        expansion=_info_field(info, "Expansion rate"),
    )
