"""Parsing of list entries and the key form of addresses.

An entry is a single address or a CIDR range. The key form of an address is
its family digit followed by its value in fixed-width lowercase hex: `4` and 8
digits for IPv4, `6` and 32 digits for IPv6. Because the width is fixed within
a family, comparing key forms as strings compares the addresses as numbers,
which is what lets sorted sets ordered by member (ZRANGE ... BYLEX) hold ranges.
"""

import dataclasses
import ipaddress

from validation import InvalidField, parse_ip

IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
MAX_SHOWN_LENGTH = 64  # characters of a rejected entry quoted in a message


@dataclasses.dataclass(frozen=True)
class Entry:
    text: str  # canonical text: "203.0.113.7", "10.0.0.0/8", "2001:db8::/32"
    family: int  # 4 or 6
    first: int  # first address of the entry, as an integer
    last: int  # last address, equal to `first` for a single address
    prefix_length: int  # 32 or 128 for a single address

    @property
    def is_range(self):
        return self.first != self.last

    @property
    def first_key(self):
        return address_key_of(self.family, self.first)

    @property
    def last_key(self):
        return address_key_of(self.family, self.last)

    @property
    def index_member(self):
        """Return the member of the list's entries index: key form, then text."""
        return f"{self.first_key}:{self.text}"


def address_key_of(family, value):
    """Return the key form of the address `value` (an integer) of `family`."""
    if family == 4:
        return f"4{value:08x}"
    return f"6{value:032x}"


def address_key(ip):
    """Return the key form of a normalised address, as `validation.parse_ip` returns it."""
    address = ipaddress.ip_address(ip)
    return address_key_of(address.version, int(address))


def _invalid_entry(text, field):
    return InvalidField(
        field,
        f"{text[:MAX_SHOWN_LENGTH]!r} is not a valid IPv4 or IPv6 address or CIDR range "
        "(for example 203.0.113.7 or 10.0.0.0/8).",
    )


def _network_from_text(text, field):
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        if "host bits set" not in str(error):
            raise _invalid_entry(text, field) from None
        widened = ipaddress.ip_network(text, strict=False)
        raise InvalidField(
            field, f"Range {text[:MAX_SHOWN_LENGTH]!r} has host bits set: write it as {widened}."
        ) from None
    if network.version == 6 and network.subnet_of(IPV4_MAPPED):
        # Clicks from IPv4-mapped addresses are checked as IPv4, so the range is too.
        first = network.network_address.ipv4_mapped
        network = ipaddress.ip_network((first, network.prefixlen - 96))
    return network


def parse_entry(value, field="entry"):
    """Return the `Entry` of an address or CIDR range, or raise `InvalidField`.

    IPv4-mapped IPv6 addresses and ranges become IPv4, and a /32 or /128
    range becomes a single address, so each entry has one canonical text.
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidField(field, f"Field '{field}' must be an address or a CIDR range.")
    text = value.strip()
    if "%" in text:
        raise InvalidField(
            field, f"{text[:MAX_SHOWN_LENGTH]!r} has a zone index: remove the part from '%'."
        )

    if "/" not in text:
        try:
            address = ipaddress.ip_address(parse_ip(text, field))
        except InvalidField:
            raise _invalid_entry(text, field) from None
        return Entry(str(address), address.version, int(address), int(address),
                     address.max_prefixlen)

    network = _network_from_text(text, field)
    first = int(network.network_address)
    last = int(network.broadcast_address)
    if network.num_addresses == 1:
        return Entry(str(network.network_address), network.version, first, last,
                     network.prefixlen)
    return Entry(str(network), network.version, first, last, network.prefixlen)


def parse_address(value, field="ip"):
    """Return the `Entry` of a single address, or raise `InvalidField` for a range."""
    message = f"Field '{field}' must be a single IPv4 or IPv6 address"
    if not isinstance(value, str) or not value.strip():
        raise InvalidField(field, f"{message}.")
    entry = parse_entry(value, field)
    if entry.is_range:
        raise InvalidField(field, f"{message}, got the range {entry.text}.")
    return entry


def supernets(entry):
    """Return the texts of every CIDR range that strictly contains `entry`, widest first."""
    network_class = ipaddress.IPv4Network if entry.family == 4 else ipaddress.IPv6Network
    return [
        str(network_class((entry.first, length), strict=False))
        for length in range(entry.prefix_length)
    ]
