"""Settings of the service, read once from the environment and validated.

An invalid value raises `ConfigError`. Its message names the variable and the
accepted values, so start-up stops with a clear message.
"""

import dataclasses
import math
import os
from urllib.parse import urlsplit

import constants


class ConfigError(ValueError):
    """An environment variable has an invalid value."""


@dataclasses.dataclass(frozen=True)
class Settings:
    redis_url: str | None = None  # None: start the embedded server
    click_spam_threshold: int = constants.CLICK_SPAM_THRESHOLD
    click_spam_window_sec: float = constants.CLICK_SPAM_WINDOW_IN_SEC
    trust_client_ts: bool = False
    stream_key: str = constants.STREAM_KEY
    stream_maxlen: int = constants.STREAM_MAXLEN
    timeseries_retention_ms: int = constants.TIMESERIES_RETENTION_MS
    filter_capacity: int = constants.FILTER_CAPACITY
    filter_bucket_size: int = constants.FILTER_BUCKET_SIZE
    filter_expansion: int = constants.FILTER_EXPANSION
    redis_timeout_sec: float = constants.REDIS_TIMEOUT_SEC
    stream_consumer: str = "auto"
    consumer_batch_size: int = constants.CONSUMER_BATCH_SIZE
    consumer_block_ms: int = constants.CONSUMER_BLOCK_MS
    consumer_claim_idle_ms: int = constants.CONSUMER_CLAIM_IDLE_MS
    embedded_redis_port: int = 0  # 0: any free port
    port: int = constants.PORT
    log_format: str = "text"
    log_level: str = "INFO"
    # Bearer token of the admin API, or None to disable the API. It is kept out
    # of repr, so that logging the settings never logs the token.
    admin_token: str | None = dataclasses.field(default=None, repr=False)

    @property
    def window_ms(self):
        return int(self.click_spam_window_sec * 1000)

    @property
    def embedded(self):
        return self.redis_url is None


def _integer(env, name, default, minimum=None, maximum=None):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value}")
    return value


def _number(env, name, default, minimum_exclusive=0.0):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or not value > minimum_exclusive:
        raise ConfigError(
            f"{name} must be a finite number greater than {minimum_exclusive:g}, got {raw!r}"
        )
    return value


def _boolean(env, name, default=False):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be one of 1, true, yes, on, 0, false, no, off; got {raw!r}")


def _choice(env, name, default, choices):
    value = env.get(name, "").strip() or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _redis_url(env):
    """Return the Redis URL from REDIS_URL, or REDIS_HOST and REDIS_PORT, or None."""
    url = env.get("REDIS_URL", "").strip()
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                f"REDIS_URL must start with redis://, rediss:// or unix://, got {url!r}"
            )
        try:
            parts.port
        except ValueError:
            raise ConfigError(f"REDIS_URL has an invalid port: {url!r}") from None
        if parts.scheme != "unix" and not parts.hostname:
            raise ConfigError(f"REDIS_URL has no host name: {url!r}")
        return url

    host = env.get("REDIS_HOST", "").strip()
    if not host:
        if env.get("REDIS_PORT", "").strip():
            raise ConfigError("REDIS_PORT is set but REDIS_HOST is not: set both, or REDIS_URL")
        return None
    port = _integer(env, "REDIS_PORT", 6379, minimum=1, maximum=65535)
    if any(char in host for char in "/@ "):
        raise ConfigError(f"REDIS_HOST must be a host name or an address, got {host!r}")
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return f"redis://{host}:{port}/0"


def _admin_token(env):
    token = env.get("ADMIN_TOKEN", "").strip()
    if not token:
        return None
    if len(token) < constants.ADMIN_TOKEN_MIN_LENGTH:
        raise ConfigError(
            f"ADMIN_TOKEN must be at least {constants.ADMIN_TOKEN_MIN_LENGTH} characters long, "
            f"got {len(token)}; generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token


def load_settings(env=None):
    """Build the settings from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    return Settings(
        redis_url=_redis_url(env),
        click_spam_threshold=_integer(
            env, "CLICK_SPAM_THRESHOLD", constants.CLICK_SPAM_THRESHOLD, minimum=1
        ),
        click_spam_window_sec=_number(
            env, "CLICK_SPAM_WINDOW_IN_SEC", constants.CLICK_SPAM_WINDOW_IN_SEC
        ),
        trust_client_ts=_boolean(env, "TRUST_CLIENT_TS"),
        stream_key=env.get("STREAM_KEY", "").strip() or constants.STREAM_KEY,
        stream_maxlen=_integer(env, "STREAM_MAXLEN", constants.STREAM_MAXLEN, minimum=1000),
        timeseries_retention_ms=_integer(
            env, "TIMESERIES_RETENTION_MS", constants.TIMESERIES_RETENTION_MS, minimum=0
        ),
        filter_capacity=_integer(env, "FILTER_CAPACITY", constants.FILTER_CAPACITY, minimum=1),
        filter_bucket_size=_integer(
            env, "FILTER_BUCKET_SIZE", constants.FILTER_BUCKET_SIZE, minimum=1, maximum=255
        ),
        filter_expansion=_integer(
            env, "FILTER_EXPANSION", constants.FILTER_EXPANSION, minimum=0, maximum=32768
        ),
        redis_timeout_sec=_number(env, "REDIS_TIMEOUT_SEC", constants.REDIS_TIMEOUT_SEC),
        stream_consumer=_choice(env, "STREAM_CONSUMER", "auto", ("auto", "gears", "worker")),
        consumer_batch_size=_integer(
            env, "CONSUMER_BATCH_SIZE", constants.CONSUMER_BATCH_SIZE, minimum=1, maximum=10_000
        ),
        consumer_block_ms=_integer(
            env, "CONSUMER_BLOCK_MS", constants.CONSUMER_BLOCK_MS, minimum=1
        ),
        consumer_claim_idle_ms=_integer(
            env, "CONSUMER_CLAIM_IDLE_MS", constants.CONSUMER_CLAIM_IDLE_MS, minimum=100
        ),
        embedded_redis_port=_integer(env, "EMBEDDED_REDIS_PORT", 0, minimum=0, maximum=65535),
        port=_integer(env, "PORT", constants.PORT, minimum=1, maximum=65535),
        log_format=_choice(env, "LOG_FORMAT", "text", ("text", "json")),
        log_level=_choice(
            env, "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")
        ),
        admin_token=_admin_token(env),
    )
