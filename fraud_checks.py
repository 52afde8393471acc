"""The click check: blacklist and click spam, in one atomic script."""

import dataclasses
import time

import redis

import constants
import keys
import lua_scripts

# Share of the Redis timeout within which the script must start. Past it the
# script writes nothing, so a click that got a 503 is never recorded.
DEADLINE_SHARE = 0.8


class RequestExpired(Exception):
    """Redis ran the check after the caller had given up on it."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    fraud_type: str
    clicks_in_window: int  # clicks of the device in the window before this one
    entry_id: str  # id of the stream entry written for the click

    @property
    def status(self):
        return "clean" if self.fraud_type == constants.CLEAN else "fraud"


class ClickChecker:
    """Runs `lua/check_click.lua` for clicks.

    Args:
        client: a redis-py client with decode_responses=True.
        settings: the `config.Settings` of the service.
    """

    def __init__(self, client, settings):
        self.client = client
        self.settings = settings
        self.script = lua_scripts.register(client, "check_click.lua")

    def deadline_ms(self):
        budget_ms = self.settings.redis_timeout_sec * 1000 * DEADLINE_SHARE
        return int(time.time() * 1000 + budget_ms)

    def script_args(self, click, deadline_ms):
        settings = self.settings
        script_keys = [constants.FILTER_KEY, keys.device_window(click.device_id), settings.stream_key]
        args = [
            deadline_ms,
            click.ip,
            click.ts,
            settings.window_ms,
            settings.click_spam_threshold,
            settings.stream_maxlen,
            *click.stream_fields(),
        ]
        return script_keys, args

    def check(self, click):
        """Check one click, record it and return its `Verdict`.

        Raises:
            RequestExpired: Redis started the script after the deadline.
            redis.ConnectionError, redis.TimeoutError: Redis is unreachable.
        """
        script_keys, args = self.script_args(click, self.deadline_ms())
        try:
            entry_id, fraud_type, clicks = self.script(keys=script_keys, args=args)
        except redis.ResponseError as error:
            if str(error).startswith("EXPIRED"):
                raise RequestExpired(str(error)) from error
            raise
        return Verdict(fraud_type, int(clicks), entry_id)
