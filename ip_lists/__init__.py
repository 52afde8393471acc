"""The blacklist and the allowlist: single addresses and CIDR ranges, IPv4 and IPv6.

`docs/blacklist.md` describes the keys, the rules of the click check and the
admin HTTP API and CLI built on this package.
"""
