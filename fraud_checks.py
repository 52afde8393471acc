"""The click check: allowlist, blacklist and click spam, in one atomic script."""

import dataclasses
import time

import redis

import constants
import keys
import lua_scripts
from ip_lists import cuckoo
from ip_lists.entries import address_key

# Share of the Redis timeout within which the script must start. Past it the
# script writes nothing, so a click that got a 503 is never recorded.
DEADLINE_SHARE = 0.8


class RequestExpired(Exception):
    """Redis ran the check after the caller had given up on it."""


class KeysMissing(Exception):
    """The Cuckoo filter is missing, so Redis lost the keys that set-up creates."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    fraud_type: str
    clicks_in_window: int  # clicks of the device in the window before this one
    entry_id: str  # id of the stream entry written for the click
    ts: int  # click time in ms since the epoch, from the client or Redis
    # The list that decided: "allowlist", "blacklist_address", "blacklist_range",
    # "blacklist_filter" (an item of ip_cf that no record owns), or "" for none.
    ip_match: str = ""

    @property
    def status(self):
        return "clean" if self.fraud_type == constants.CLEAN else "fraud"


class ClickChecker:
    """Runs `lua/check_click.lua` for one click or a batch of clicks.

    Args:
        client: a redis-py client with decode_responses=True.
        settings: the `config.Settings` of the service.
    """

    def __init__(self, client, settings):
        self.client = client
        self.settings = settings
        self.script = lua_scripts.register(client, "check_click.lua")
        self._inserted_count_is_current = None

    def deadline_ms(self):
        budget_ms = self.settings.redis_timeout_sec * 1000 * DEADLINE_SHARE
        return int(time.time() * 1000 + budget_ms)

    def inserted_count_is_current(self):
        """Return whether CF.INFO counts current items, probing the server once per checker."""
        if self._inserted_count_is_current is None:
            self._inserted_count_is_current = cuckoo.inserted_count_is_current(self.client)
        return self._inserted_count_is_current

    def script_args(self, clicks, deadline_ms):
        settings = self.settings
        script_keys = [
            constants.FILTER_KEY,
            settings.stream_key,
            keys.list_addresses(constants.BLACKLIST),
            keys.list_segments(constants.BLACKLIST),
            keys.list_addresses(constants.ALLOWLIST),
            keys.list_segments(constants.ALLOWLIST),
            keys.filter_managed_items(),
        ]
        header = [
            deadline_ms,
            settings.window_ms,
            settings.click_spam_threshold,
            settings.stream_maxlen,
            1 if self.inserted_count_is_current() else 0,
            len(script_keys),
        ]
        args = [len(header) + 1, *header]
        for click in clicks:
            script_keys.append(keys.device_window(click.device_id))
            fields = click.stream_fields()
            ts = "" if click.ts is None else click.ts
            args += [click.ip, address_key(click.ip), ts, len(fields) // 2, *fields]
        return script_keys, args

    def check_many(self, clicks):
        """Check clicks in order in one script call and return their `Verdict`s.

        Raises:
            RequestExpired: Redis started the script after the deadline.
            KeysMissing: the filter is missing; the script wrote nothing.
            redis.ConnectionError, redis.TimeoutError: Redis is unreachable.
        """
        if not clicks:
            return []
        self.inserted_count_is_current()  # probed before the deadline starts, once per checker
        script_keys, args = self.script_args(clicks, self.deadline_ms())
        try:
            reply = self.script(keys=script_keys, args=args)
        except redis.ResponseError as error:
            if str(error).startswith("EXPIRED"):
                raise RequestExpired(str(error)) from error
            if str(error).startswith("NOFILTER"):
                raise KeysMissing(str(error)) from error
            raise
        return [
            Verdict(reply[i + 1], int(reply[i + 2]), reply[i], int(reply[i + 4]), reply[i + 3])
            for i in range(0, len(reply), 5)
        ]

    def check(self, click):
        """Check one click, record it and return its `Verdict`."""
        return self.check_many([click])[0]
