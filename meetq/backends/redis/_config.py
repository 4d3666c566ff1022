"""The ``redis:`` config section, owned by this backend (its ``BackendSpec.config``).

Imports no driver: the section is validated when a config is loaded, whether or not the
``redis`` package is installed.
"""

from __future__ import annotations

import urllib.parse
from typing import ClassVar

import attrs

from meetq.backend import (
    ConfigError,
    bool_field,
    duration_field,
    int_field,
    parse_duration,
    str_field,
)

__all__ = ["RedisConfig", "check_redis_url"]

_URL_HELP = "expected redis://[user:password@]host[:port][/db], rediss://... or unix:///path"
# Query arguments redis-py converts itself (redis.connection.URL_QUERY_ARGUMENT_PARSERS);
# the numeric ones are checked here: a bad one is a ConfigError at load time, not a
# ValueError at connect.
_URL_INT_ARGS = ("db", "max_connections", "health_check_interval")
_URL_FLOAT_ARGS = ("socket_timeout", "socket_connect_timeout", "timeout")


def check_redis_url(path: str, url: str) -> None:
    """Refuse what redis-py's ``from_url`` would raise on later, naming the part."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise ConfigError(path, url, f"not a valid URL ({exc}); {_URL_HELP}") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(path, url, f"unknown scheme {parts.scheme!r}; {_URL_HELP}")
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(path, url, f"a unix URL needs a socket path; {_URL_HELP}")
    else:
        if not parts.hostname:
            raise ConfigError(path, url, f"no host; {_URL_HELP}")
        if port == 0:
            raise ConfigError(path, url, "port 0 cannot be connected to")
        db = urllib.parse.unquote(parts.path).replace("/", "")
        if db and not (db.isascii() and db.isdigit()):
            raise ConfigError(path, url, f"the path must be a database number, not {db!r}")
    for name, values in urllib.parse.parse_qs(parts.query).items():
        value = urllib.parse.unquote(values[0]).strip()
        try:
            if name in _URL_INT_ARGS:
                int(value)
            elif name in _URL_FLOAT_ARGS:
                parse_duration(float(value), number_unit=1.0)
        except ValueError:
            raise ConfigError(path, url, f"query argument {name}={value!r} is invalid") from None


@attrs.frozen(kw_only=True)
class RedisConfig:
    """Connection to Redis, used by every component whose ``type`` is a Redis one."""

    SECTION: ClassVar[str] = "redis"
    # The older short form of MEETQ_REDIS__URL, kept working.
    ENV_SHORT_FORMS: ClassVar[dict[str, str]] = {"MEETQ_REDIS_URL": "url"}

    url: str = str_field("redis://127.0.0.1:6379/0", check=check_redis_url)
    # The bound of every call against a server that stopped answering (a hung host, a
    # partition); 0 means none. The hot paths enforce it with one shared timer instead of
    # redis-py's per-command ones (see meetq/backends/redis/_deadline.py).
    socket_timeout: float = duration_field(5.0, 1.0)
    socket_connect_timeout: float = duration_field(5.0, 1.0)
    # A pooled connection idle this long is PINGed before it carries a command, and the
    # wake-up listener and the Pub/Sub subscriber PING a connection silent this long (a
    # frozen peer sends no FIN; only an unanswered PING shows it). 0: no pooled checks,
    # the listeners then PING after 15 s.
    health_check_interval: float = duration_field(10.0, 1.0)
    # TCP keepalive, in whole seconds as the socket options take them (Linux caps them
    # at 32767 and 127): with the OS defaults a vanished peer is noticed after about two
    # hours, with these after idle + interval * count.
    tcp_keepalive: bool = bool_field(True)
    tcp_keepalive_idle: int = int_field(15, 1, 32767)
    tcp_keepalive_interval: int = int_field(5, 1, 32767)
    tcp_keepalive_count: int = int_field(3, 1, 127)
    max_connections: int = int_field(64, 1, 100_000)
    key_prefix: str = str_field("meetq")
