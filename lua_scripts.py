"""Loading of the Lua scripts in `lua/`."""

import os

LUA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lua")


def register(client, name):
    """Return a redis-py `Script` for `lua/<name>`.

    The script runs with EVALSHA and is loaded again on NOSCRIPT, for example
    after a Redis restart, so one call is one round trip in the usual case.
    """
    with open(os.path.join(LUA_DIR, name), encoding="utf-8") as source:
        return client.register_script(source.read())
