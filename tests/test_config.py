"""Config validation: every key read once at init_app, errors that name the key."""

from __future__ import annotations

import re
import runpy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_redispool import CONFIG_KEYS, ConfigError, ConfigWarning, RedisPool
from flask_redispool._config import BACKOFF_CAP, MAX_RETRIES, load_settings, redact_url

from .conftest import PASSWORD

URL = "redis://127.0.0.1:1/0"  # nothing listens there: init_app must not connect

STATS_INTERVAL_MUST = "REDIS_STATS_INTERVAL must be 0 (off) or a number of seconds from 0.1 to 86400, got "
RETRIES_MUST = (
    "REDIS_RETRIES must be an integer from 0 to 10 (at 10, a command that Redis does not answer may already "
    "take 35.7 s with the default timeouts), got "
)
DB_MUST = "REDIS_OPTIONS['db'] must be an integer from 0 to 2147483647, got "
NOT_A_DB = "the database must be a number from 0 to 2147483647"
MANY_DIGITS = "1" * 4301  # int() refuses it (Python's int-size limit); redis-py then reads db 0


def settings_for(**config: Any) -> Any:
    return load_settings({"REDIS_URL": URL, **config}, "REDIS", "app")


def test_defaults_are_the_declared_ones() -> None:
    settings = settings_for()
    for key in CONFIG_KEYS:
        if key.name in ("URL", "CLIENT_NAME"):
            continue
        assert getattr(settings, key.name.lower()) == key.default, key.name
    assert settings.client_name == "app"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"REDIS_MAX_CONNECTIONS": 0}, "REDIS_MAX_CONNECTIONS must be an integer >= 1, got 0 (int)"),
        ({"REDIS_MAX_CONNECTIONS": -3}, "REDIS_MAX_CONNECTIONS must be an integer >= 1, got -3 (int)"),
        ({"REDIS_MAX_CONNECTIONS": None}, "REDIS_MAX_CONNECTIONS must be an integer >= 1, got None (NoneType)"),
        ({"REDIS_MAX_CONNECTIONS": 2.5}, "REDIS_MAX_CONNECTIONS must be an integer >= 1, got 2.5 (float)"),
        ({"REDIS_MAX_CONNECTIONS": True}, "REDIS_MAX_CONNECTIONS must be an integer >= 1, got True (bool)"),
        ({"REDIS_MAX_CONNECTIONS": " 10"}, "REDIS_MAX_CONNECTIONS must be an integer >= 1, got ' 10' (str)"),
        ({"REDIS_POOL_BLOCKING": "maybe"}, "REDIS_POOL_BLOCKING must be a boolean"),
        ({"REDIS_POOL_BLOCKING": 1}, "REDIS_POOL_BLOCKING must be a boolean"),
        ({"REDIS_POOL_TIMEOUT": -1}, "REDIS_POOL_TIMEOUT must be a number of seconds >= 0 and <= 86400, got -1 (int)"),
        ({"REDIS_POOL_TIMEOUT": "soon"}, "REDIS_POOL_TIMEOUT must be a number of seconds >= 0 and <= 86400, got 'soon"),
        ({"REDIS_SOCKET_TIMEOUT": 0}, "REDIS_SOCKET_TIMEOUT must be a number of seconds > 0 and <= 86400, got 0 (int)"),
        ({"REDIS_SOCKET_TIMEOUT": None}, "REDIS_SOCKET_TIMEOUT must be a number of seconds > 0 and <= 86400, got None"),
        ({"REDIS_SOCKET_CONNECT_TIMEOUT": float("inf")}, "REDIS_SOCKET_CONNECT_TIMEOUT must be a number"),
        ({"REDIS_RETRIES": -1}, RETRIES_MUST + "-1 (int)"),
        ({"REDIS_RETRIES": 10**9}, RETRIES_MUST + "1000000000 (int)"),
        ({"REDIS_RETRIES": "11"}, RETRIES_MUST + "'11' (str)"),
        ({"REDIS_MAX_CONNECTIONS": MANY_DIGITS}, f"REDIS_MAX_CONNECTIONS must be an integer >= 1, got '{MANY_DIGITS}'"),
        # Options redis-py would only refuse at the first command (SELECT zero), naming the option.
        ({"REDIS_OPTIONS": {"db": "zero"}}, DB_MUST + "a str."),
        ({"REDIS_OPTIONS": {"db": -1}}, DB_MUST + "a number out of that range."),
        ({"REDIS_OPTIONS": {"db": 2**31}}, DB_MUST + "a number out of that range."),
        ({"REDIS_OPTIONS": {"db": 1.0}}, DB_MUST + "a float."),
        ({"REDIS_OPTIONS": {"db": True}}, DB_MUST + "a bool."),
        ({"REDIS_OPTIONS": {"db": MANY_DIGITS}}, DB_MUST + "a str."),
        (
            {"REDIS_OPTIONS": {"socket_read_size": "64k"}},
            "REDIS_OPTIONS['socket_read_size'] must be an integer from 1 to 2147483647, got a str.",
        ),
        (
            {"REDIS_OPTIONS": {"socket_type": -1}},
            "REDIS_OPTIONS['socket_type'] must be an integer from 0 to 2147483647, got a number out of that range.",
        ),
        ({"REDIS_HEALTH_CHECK_INTERVAL": "-5"}, "REDIS_HEALTH_CHECK_INTERVAL must be a number of seconds >= 0"),
        (
            {"REDIS_STATS_INTERVAL": 0.05},
            STATS_INTERVAL_MUST + "0.05",
        ),
        (
            {"REDIS_STATS_INTERVAL": "-1"},
            STATS_INTERVAL_MUST + "'-1'",
        ),
        (
            {"REDIS_STATS_INTERVAL": None},
            STATS_INTERVAL_MUST + "None",
        ),
        ({"REDIS_DECODE_RESPONSES": "sure"}, "REDIS_DECODE_RESPONSES must be a boolean"),
        ({"REDIS_CLIENT_NAME": "my app"}, "REDIS_CLIENT_NAME must be a non-empty string of printable"),
        ({"REDIS_CLIENT_NAME": ""}, "REDIS_CLIENT_NAME must be a non-empty string of printable"),
        ({"REDIS_OPTIONS": ["socket_keepalive"]}, "REDIS_OPTIONS must be a dict of redis-py keyword arguments"),
        ({"REDIS_OPTIONS": {1: 2}}, "REDIS_OPTIONS must be a dict of redis-py keyword arguments"),
        (
            {"REDIS_OPTIONS": {"socket_timeout": 3}},
            "REDIS_OPTIONS['socket_timeout'] conflicts with REDIS_SOCKET_TIMEOUT: set REDIS_SOCKET_TIMEOUT instead.",
        ),
        (
            {"REDIS_OPTIONS": {"max_connections": 3}},
            "REDIS_OPTIONS['max_connections'] conflicts with REDIS_MAX_CONNECTIONS",
        ),
        ({"REDIS_OPTIONS": {"connection_pool": None}}, "REDIS_OPTIONS['connection_pool'] cannot be set"),
        ({"REDIS_URL": "http://localhost"}, "REDIS_URL must be a URL with one of the schemes redis://, rediss://"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL must be a URL with one of the schemes"),
        (
            {"REDIS_URL": "localhost:6379"},  # no password in it: what was typed is shown
            "REDIS_URL must be a URL with one of the schemes redis://, rediss://, unix://, fakeredis://, "
            "redis+sentinel://, rediss+sentinel://, redis+cluster://, rediss+cluster://, got localhost:6379",
        ),
        ({"REDIS_URL": 6379}, "REDIS_URL must be a URL with one of the schemes redis://, rediss://, unix://"),
        # Durations beyond a day overflow the socket and thread layers at the first command.
        ({"REDIS_SOCKET_TIMEOUT": 1e10}, "REDIS_SOCKET_TIMEOUT must be a number of seconds > 0 and <= 86400, got 1"),
        ({"REDIS_SOCKET_CONNECT_TIMEOUT": float("nan")}, "REDIS_SOCKET_CONNECT_TIMEOUT must be a number of seconds"),
        ({"REDIS_POOL_TIMEOUT": 1e300}, "REDIS_POOL_TIMEOUT must be a number of seconds >= 0 and <= 86400, got 1e+300"),
        ({"REDIS_POOL_TIMEOUT": float("inf")}, "REDIS_POOL_TIMEOUT must be a number of seconds >= 0 and <= 86400"),
        ({"REDIS_STATS_INTERVAL": 1e10}, STATS_INTERVAL_MUST + "10000000000.0"),
        ({"REDIS_HEALTH_CHECK_INTERVAL": "1e10"}, "REDIS_HEALTH_CHECK_INTERVAL must be a number of seconds >= 0"),
        # Values redis-py would only refuse at the first command, and without echoing them.
        (
            {"REDIS_OPTIONS": {"encoding": "utf-8x"}},
            "REDIS_OPTIONS must be a dict whose 'encoding' names a Python codec, got a dict with keys ['encoding']",
        ),
        (
            {"REDIS_OPTIONS": {"encoding_errors": "shrug"}},
            "REDIS_OPTIONS must be a dict whose 'encoding_errors' names a Python error handler, got a dict with keys",
        ),
        (
            {"REDIS_OPTIONS": {"socket_keepalive_options": {"TCP_KEEPIDLE": 60}}},
            "REDIS_OPTIONS must be a dict whose 'socket_keepalive_options' maps socket option numbers to ints",
        ),
        (
            {"REDIS_OPTIONS": {"password": PASSWORD, 7: "x"}},
            "REDIS_OPTIONS must be a dict of redis-py keyword arguments with string keys, got a dict with keys "
            "['7', 'password']",
        ),
        # A password with an unencoded '/', '?' or '#' would end early, and the rest be read as path.
        (
            {"REDIS_URL": f"redis://:pa/{PASSWORD}@evil.example:1/0"},
            "REDIS_URL must be a URL whose password is percent-encoded: a '/', '?', '#' or '@' in the password must "
            "be written %2F, %3F, %23 or %40 (urllib.parse.quote(password, safe='')), got redis://***@evil.example:1/0",
        ),
        ({"REDIS_URL": f"redis://:pa#{PASSWORD}@localhost/0"}, "REDIS_URL must be a URL whose password is percent-"),
        ({"REDIS_URL": f"redis://:pa?{PASSWORD}@localhost/0"}, "REDIS_URL must be a URL whose password is percent-"),
        ({"REDIS_CLIENT_NAME": True}, "REDIS_CLIENT_NAME must be a non-empty string of printable characters"),
    ],
)
def test_bad_config_is_refused_naming_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_for(**config)
    assert str(info.value).startswith(message)


def test_the_retries_bound_states_the_worst_case_it_allows() -> None:
    at_bound = settings_for(REDIS_RETRIES=MAX_RETRIES)
    assert f"{at_bound.worst_case_seconds:g} s" in RETRIES_MUST
    with pytest.raises(ConfigError, match=re.escape(RETRIES_MUST)):
        settings_for(REDIS_RETRIES=MAX_RETRIES + 1)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"REDIS_URL": "redis://127.0.0.1:1/0?socket_timeout=3"},
            "REDIS_URL query argument 'socket_timeout' conflicts with REDIS_SOCKET_TIMEOUT",
        ),
        (
            {"REDIS_URL": "redis://127.0.0.1:1/0?socket_keepalive=true", "REDIS_OPTIONS": {"socket_keepalive": True}},
            "REDIS_URL query argument 'socket_keepalive' is also given in REDIS_OPTIONS: give it once.",
        ),
        ({"REDIS_URL": "redis://127.0.0.1:notaport/0"}, "REDIS_URL is not a valid Redis URL"),
        ({"REDIS_URL": "redis://127.0.0.1:1/zero"}, "REDIS_URL is not a valid Redis URL"),
        (
            {"REDIS_URL": "redis+cluster://127.0.0.1:1?db=3"},
            "REDIS_URL is not a valid Redis Cluster URL (redis+cluster://127.0.0.1:1?db=3): a cluster has database 0",
        ),
        ({"REDIS_OPTIONS": {"no_such_option": 1}}, "REDIS_OPTIONS or REDIS_URL holds an option that Connection"),
        # Encoding options the codec check of REDIS_OPTIONS does not see: in the URL, or a codec for bytes only.
        (
            {"REDIS_URL": "redis://127.0.0.1:1/0?encoding=utf-8x"},
            "REDIS_OPTIONS or REDIS_URL holds an option that Connection does not take: LookupError for one of [",
        ),
        (
            {"REDIS_OPTIONS": {"encoding": "rot13"}},
            "REDIS_OPTIONS or REDIS_URL holds an option that Connection does not take: LookupError for one of [",
        ),
        ({"REDIS_URL": "rediss://127.0.0.1:1/0", "REDIS_OPTIONS": {"ssl_cert_reqs": "sometimes"}}, "REDIS_OPTIONS"),
    ],
)
def test_bad_url_or_options_are_refused_at_init_app(
    make_app: Callable[..., Flask], config: dict[str, Any], message: str
) -> None:
    app = make_app(**{"REDIS_URL": URL, **config})
    with pytest.raises(ConfigError) as info:
        RedisPool(app)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        (f"redis://127.0.0.1:1/{MANY_DIGITS}", "Redis"),
        ("redis://127.0.0.1:1/2147483648", "Redis"),
        ("redis://127.0.0.1:1/0?db=-1", "Redis"),
        ("redis://127.0.0.1:1?%64b=2147483648", "Redis"),
        ("unix:///tmp/redis.sock?db=-1", "Redis"),
        (f"fakeredis:///{MANY_DIGITS}", "Redis"),
        (f"redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster/{MANY_DIGITS}", "Sentinel"),
        ("redis+sentinel://127.0.0.1:1/mymaster/0?db=2147483648", "Sentinel"),
        ("redis+sentinel://127.0.0.1:1/mymaster/\u00b2", "Sentinel"),
    ],
)
def test_a_database_no_server_takes_is_refused_at_init_app(make_app: Callable[..., Flask], url: str, kind: str) -> None:
    """The server reads the number as a 32-bit int; redis-py reads a path int() refuses as db 0."""
    with pytest.raises(ConfigError) as info:
        RedisPool(make_app(REDIS_URL=url))
    assert str(info.value) == f"REDIS_URL is not a valid {kind} URL ({url}): {NOT_A_DB}"


@pytest.mark.parametrize(
    ("config", "db"),
    [
        ({"REDIS_URL": "redis://127.0.0.1:1/2147483647"}, 2147483647),
        ({"REDIS_URL": "redis://127.0.0.1:1/000000000000003"}, 3),
        ({"REDIS_URL": "redis://127.0.0.1:1/?db=4"}, 4),
        ({"REDIS_URL": "redis://127.0.0.1:1", "REDIS_OPTIONS": {"db": "5"}}, 5),  # as redis-py sends it
        ({"REDIS_URL": "unix:///tmp/redis.sock?db=6"}, 6),
    ],
)
def test_database_numbers_the_server_takes_are_accepted(
    make_app: Callable[..., Flask], config: dict[str, Any], db: int
) -> None:
    app = make_app(**config)
    assert int(RedisPool(app).get_pool(app).connection_kwargs["db"]) == db


@pytest.mark.parametrize("config", [{}, {"REDIS_URL": None}], ids=["absent", "none"])
def test_missing_url_says_what_to_set(make_app: Callable[..., Flask], config: dict[str, object]) -> None:
    """``None`` is what ``os.environ.get("REDIS_URL")`` gives when the variable is unset."""
    with pytest.raises(ConfigError, match=r"^REDIS_URL is not set: give the Redis server's URL"):
        RedisPool(make_app(**config))


@pytest.mark.parametrize(
    ("raw", "key", "expected"),
    [
        ("25", "MAX_CONNECTIONS", 25),
        ("false", "POOL_BLOCKING", False),
        ("YES", "POOL_BLOCKING", True),
        ("0", "DECODE_RESPONSES", False),
        ("0.25", "SOCKET_TIMEOUT", 0.25),
        ("2", "POOL_TIMEOUT", 2.0),
        ("0", "RETRIES", 0),
        ("0", "STATS_INTERVAL", 0.0),
        ("86400", "SOCKET_TIMEOUT", 86400.0),
        (False, "CLIENT_NAME", "app"),  # no CLIENT SETNAME; snapshots still carry the app's name
        ("off", "CLIENT_NAME", "app"),
        ("0.5", "STATS_INTERVAL", 0.5),
        (3, "SOCKET_TIMEOUT", 3.0),
    ],
)
def test_clean_strings_from_the_environment_are_accepted(raw: object, key: str, expected: object) -> None:
    value = getattr(settings_for(**{f"REDIS_{key}": raw}), key.lower())
    assert value == expected
    assert type(value) is type(expected)


def test_a_typo_warns_with_the_close_match() -> None:
    with pytest.warns(ConfigWarning, match=r"REDIS_MAX_CONECTIONS .* did you mean REDIS_MAX_CONNECTIONS\?"):
        settings_for(REDIS_MAX_CONECTIONS=5)


@pytest.mark.parametrize(
    "key",
    # Flask-Caching's own keys, read with prefix CACHE_REDIS (CACHE_TYPE="RedisCache"). Its
    # SENTINEL_PASSWORD is ours too, with the same meaning: refused without redis+sentinel://.
    ["HOST", "PORT", "PASSWORD", "DB", "SENTINELS", "SENTINEL_MASTER", "CLUSTER"],
)
def test_another_extensions_keys_under_our_prefix_do_not_warn(key: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_settings({"CACHE_REDIS_URL": URL, f"CACHE_REDIS_{key}": "x"}, "CACHE_REDIS", "app")


def test_keys_of_another_prefix_and_unrelated_keys_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        settings_for(REDIS_CACHE_URL="redis://x", REDIS_CACHE_MAX_CONNECTIONS=3, REDIS_QUEUE_NAMES="a,b")


def test_prefix_reads_its_own_keys_only() -> None:
    settings = load_settings(
        {"REDIS_URL": URL, "CACHE_REDIS_URL": "redis://cache:6379/1", "CACHE_REDIS_MAX_CONNECTIONS": 4},
        "CACHE_REDIS",
        "app.cache_redis",
    )
    assert (settings.url, settings.max_connections, settings.key("URL")) == (
        "redis://cache:6379/1",
        4,
        "CACHE_REDIS_URL",
    )


def test_worst_case_follows_the_documented_formula() -> None:
    s = settings_for(REDIS_RETRIES=2, REDIS_SOCKET_TIMEOUT=1, REDIS_SOCKET_CONNECT_TIMEOUT=0.5)
    connect = 3 * 0.5 + 2 * BACKOFF_CAP
    assert s.worst_case_seconds == pytest.approx(3 * (connect + 1) + 2 * BACKOFF_CAP)
    assert settings_for().worst_case_seconds <= 2.0  # the defaults keep a request under 2 s
    assert settings_for(REDIS_HEALTH_CHECK_INTERVAL=30).worst_case_seconds == 2 * settings_for().worst_case_seconds


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (f"redis://:{PASSWORD}@localhost:6379/0", "redis://:***@localhost:6379/0"),
        (f"redis://user:{PASSWORD}@localhost:6379/0", "redis://user:***@localhost:6379/0"),
        (f"redis://{PASSWORD}@localhost", "redis://***@localhost"),
        (f"rediss://:{PASSWORD}@h/0?ssl_cert_reqs=none", "rediss://:***@h/0?ssl_cert_reqs=none"),
        (f"unix://user:{PASSWORD}@/tmp/redis.sock?db=1", "unix://user:***@/tmp/redis.sock?db=1"),
        (f"unix:///tmp/redis.sock?db=1&password={PASSWORD}", "unix:///tmp/redis.sock?db=1&password=***"),
        # Query argument names are decoded as redis-py decodes them: each of these is a password.
        (f"redis://localhost/0?%70assword={PASSWORD}", "redis://localhost/0?%70assword=***"),
        (f"redis://localhost/0?db=1&pass%77ord={PASSWORD}&x=1", "redis://localhost/0?db=1&pass%77ord=***&x=1"),
        (
            f"unix:///tmp/redis.sock?%70%61%73%73%77%6F%72%64={PASSWORD}",
            "unix:///tmp/redis.sock?%70%61%73%73%77%6F%72%64=***",
        ),
        (f"redis://localhost/0?PassWord={PASSWORD}", "redis://localhost/0?PassWord=***"),
        (f"redis://h/0?password={PASSWORD}&password={PASSWORD}", "redis://h/0?password=***&password=***"),
        (
            f"rediss://h/0?ssl_%70assword={PASSWORD}&ssl_cert_reqs=none",
            "rediss://h/0?ssl_%70assword=***&ssl_cert_reqs=none",
        ),
        (f"redis://h/0#password={PASSWORD}", "redis://h/0#password=***"),  # redis-py ignores it; still a password
        (f"redis://h/0?db=0#x&%70assword={PASSWORD}", "redis://h/0?db=0#x&%70assword=***"),
        (
            f"redis+sentinel://:{PASSWORD}@h1:26379,h2:26380/mymaster/0?sentinel_password={PASSWORD}",
            "redis+sentinel://:***@h1:26379,h2:26380/mymaster/0?sentinel_password=***",
        ),
        (f"redis+cluster://h1:7000,h2:7001?%70assword={PASSWORD}", "redis+cluster://h1:7000,h2:7001?%70assword=***"),
        (
            f"redis+cluster://user%3A{PASSWORD}@h1:7000,h2:7001",
            "redis+cluster://***@h1:7000,h2:7001",
        ),  # all a user name
        (f"redis://%75ser:{PASSWORD}@h/0", "redis://%75ser:***@h/0"),
        ("redis://h/0?db=1&ssl_cert_reqs=none&pass+word=x", "redis://h/0?db=1&ssl_cert_reqs=none&pass+word=x"),
        (f"redis://:pa/ss@wo:rd{PASSWORD}@h:1/0", "redis://***@h:1/0"),
        (f"redis://:pa#ss{PASSWORD}@h:1/0", "redis://***@h:1/0"),
        (f"redis://:pa?ss{PASSWORD}@h:1/0", "redis://***@h:1/0"),
        (f"redis://:pa/ss@h:1/0?%70assword={PASSWORD}", "redis://***@h:1/0?%70assword=***"),
        ("localhost:6379", "localhost:6379"),  # no password: the mistake (no scheme) stays visible
        ("localhost:6379/0", "localhost:6379/0"),
        (f"{PASSWORD}@localhost:6379", "***@localhost:6379"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("fakeredis://", "fakeredis://"),
        (PASSWORD, "***"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    "config",
    [
        {"REDIS_URL": f"http://:{PASSWORD}@localhost/0"},
        {"REDIS_URL": f"redis://:{PASSWORD}@localhost:port/0"},
        {"REDIS_URL": f"redis://:{PASSWORD}@localhost/0?socket_timeout=1"},
        {"REDIS_URL": f"redis://:{PASSWORD}@localhost/0", "REDIS_OPTIONS": {"password": PASSWORD, "bogus": 1}},
        {"REDIS_URL": f"redis://:{PASSWORD}@localhost/0", "REDIS_OPTIONS": {"password": PASSWORD, "retry": 1}},
        {"REDIS_URL": "redis://localhost/0", "REDIS_OPTIONS": {"password": PASSWORD, "encoding": "nope"}},
        {"REDIS_URL": "redis://localhost/0", "REDIS_OPTIONS": {"password": PASSWORD, "socket_timeout": 2}},
        {"REDIS_URL": "redis://localhost/0", "REDIS_OPTIONS": {"password": 12345, "ssl_cert_reqs": PASSWORD}},
        {"REDIS_URL": "redis://localhost/0", "REDIS_OPTIONS": [PASSWORD]},
        {"REDIS_URL": f"redis://:{PASSWORD}/x@localhost/0"},
        {"REDIS_URL": f"redis://:{PASSWORD}#x@localhost/0"},
        {"REDIS_URL": f"redis://:{PASSWORD}?x@localhost/0"},
        {"REDIS_URL": f"redis://localhost/0?%70assword={PASSWORD}&socket_timeout=1"},
        {"REDIS_URL": f"redis://localhost/{MANY_DIGITS}?%70assword={PASSWORD}"},
        {"REDIS_URL": f"redis+sentinel://h1,h2/mymaster/0?sentinel_password={PASSWORD}"},
        {"REDIS_URL": f"redis+cluster://h1,h2?%70assword={PASSWORD}&db=2"},
        {"REDIS_URL": "redis://localhost/0", "REDIS_OPTIONS": {"password": PASSWORD, "db": "zero"}},
        {"REDIS_URL": "redis://localhost/0", "REDIS_OPTIONS": {"db": PASSWORD}},
    ],
)
def test_config_errors_never_show_the_password(make_app: Callable[..., Flask], config: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        RedisPool(make_app(**config))
    assert PASSWORD not in str(info.value)
    assert PASSWORD not in repr(info.value)


def test_the_config_reference_states_what_each_key_takes() -> None:
    """The generated table quotes each key's error message: the bounds included."""
    table = runpy.run_path(str(Path(__file__).resolve().parent.parent / "docs" / "conf.py"))["_config_table"]()
    for key in CONFIG_KEYS:
        with pytest.raises(ConfigError) as info:
            settings_for(**{f"REDIS_{key.name}": object()})
        assert str(info.value).startswith(f"REDIS_{key.name} must be {key.accepts}, got ")
        assert f"Takes {key.accepts}." in table
    assert "an integer from 0 to 10 (at 10, a command" in table


def test_the_readme_table_lists_every_key() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    listed = set(re.findall(r"`REDIS_([A-Z_]+)`", readme.split("## Configuration")[1].split("\n## ")[0]))
    assert listed == {key.name for key in CONFIG_KEYS}


def test_settings_has_a_field_per_declared_key_and_nothing_else() -> None:
    """CONFIG_KEYS is where a key is declared; Settings repeats the names for type
    checkers (and adds what follows from them), and this keeps the two in step."""
    from dataclasses import fields

    from flask_redispool import Settings

    derived = {"prefix", "name_connections"}  # the RedisPool's own, and what CLIENT_NAME = False means
    assert {field.name for field in fields(Settings)} == {key.name.lower() for key in CONFIG_KEYS} | derived
