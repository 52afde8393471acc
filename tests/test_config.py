"""Settings from the environment: defaults, and errors that name the variable."""

import pytest

from config import ConfigError, load_settings


def test_defaults_use_embedded_server():
    settings = load_settings({})

    assert settings.redis_url is None
    assert settings.embedded
    assert settings.click_spam_threshold == 2
    assert settings.click_spam_window_sec == 10
    assert settings.window_ms == 10_000
    assert settings.trust_client_ts is False


def test_host_and_port_build_url():
    settings = load_settings({"REDIS_HOST": "redis", "REDIS_PORT": "6380"})

    assert settings.redis_url == "redis://redis:6380/0"


def test_ipv6_host_is_bracketed():
    settings = load_settings({"REDIS_HOST": "::1"})

    assert settings.redis_url == "redis://[::1]:6379/0"


def test_url_wins_over_host():
    settings = load_settings({"REDIS_URL": "rediss://:secret@cache:6390/2", "REDIS_HOST": "x"})

    assert settings.redis_url == "rediss://:secret@cache:6390/2"


def test_click_spam_settings_from_environment():
    settings = load_settings({"CLICK_SPAM_THRESHOLD": "3", "CLICK_SPAM_WINDOW_IN_SEC": "2.5"})

    assert settings.click_spam_threshold == 3
    assert settings.window_ms == 2500


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"REDIS_URL": "http://cache:6379"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://cache:notaport"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://:6379"}, "REDIS_URL"),
        ({"REDIS_HOST": "cache", "REDIS_PORT": "x"}, "REDIS_PORT"),
        ({"REDIS_HOST": "cache", "REDIS_PORT": "70000"}, "REDIS_PORT"),
        ({"REDIS_PORT": "6379"}, "REDIS_HOST"),
        ({"REDIS_HOST": "user@cache"}, "REDIS_HOST"),
        ({"CLICK_SPAM_THRESHOLD": "0"}, "CLICK_SPAM_THRESHOLD"),
        ({"CLICK_SPAM_THRESHOLD": "two"}, "CLICK_SPAM_THRESHOLD"),
        ({"CLICK_SPAM_WINDOW_IN_SEC": "-1"}, "CLICK_SPAM_WINDOW_IN_SEC"),
        ({"CLICK_SPAM_WINDOW_IN_SEC": "nan"}, "CLICK_SPAM_WINDOW_IN_SEC"),
        ({"CLICK_SPAM_WINDOW_IN_SEC": "inf"}, "CLICK_SPAM_WINDOW_IN_SEC"),
        ({"TRUST_CLIENT_TS": "maybe"}, "TRUST_CLIENT_TS"),
        ({"STREAM_CONSUMER": "magic"}, "STREAM_CONSUMER"),
        ({"STREAM_MAXLEN": "10"}, "STREAM_MAXLEN"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"PORT": "0"}, "PORT"),
    ],
)
def test_invalid_value_names_variable(env, variable):
    with pytest.raises(ConfigError) as raised:
        load_settings(env)

    assert variable in str(raised.value)
