"""The ``redis:`` config section, owned by this backend (its ``BackendSpec.config``).

Imports no driver: the section is validated when a config is loaded, whether or not the
``redis`` package is installed.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import attrs

from meetq.backend import (
    SECRET_SHOWN,
    ConfigError,
    bool_field,
    choice_field,
    duration_field,
    int_field,
    parse_duration,
    str_field,
    str_list_field,
)

__all__ = ["RedisConfig", "check_node", "check_redis_url", "node_address", "resolve_password"]

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


def check_node(path: str, node: str) -> None:
    """``host:port`` (``[v6 address]:port``), the form of ``startup_nodes`` and ``sentinels``."""
    host, colon, port = node.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isascii() or not port.isdigit():
        raise ConfigError(path, node, "expected host:port, such as 10.0.0.1:6379")
    if not 1 <= int(port) <= 65535:
        raise ConfigError(path, node, "the port must be from 1 to 65535")


def node_address(node: str) -> tuple[str, int]:
    """(host, port) of a checked ``host:port``."""
    host, _, port = node.rpartition(":")
    return host.strip("[]"), int(port)


def _check_variable_name(path: str, name: str) -> None:
    if not (name.isascii() and name.replace("_", "a").isalnum() and not name[0].isdigit()):
        raise ConfigError(path, name, "expected the name of an environment variable")


@attrs.frozen(kw_only=True)
class RedisConfig:
    """Connection to Redis, used by every component whose ``type`` is a Redis one.

    ``mode`` says what the addresses name: one server (``url``), a Redis Cluster (any of
    ``startup_nodes``, or ``url`` as the one node to start from) or the master that
    Sentinel names (``sentinels``, ``sentinel_service``). TLS and credentials apply to
    every connection of every mode; the checks across keys are in
    ``__attrs_post_init__``, so a contradiction is refused when the config is loaded.
    """

    SECTION: ClassVar[str] = "redis"
    # The older short form of MEETQ_REDIS__URL, kept working.
    ENV_SHORT_FORMS: ClassVar[dict[str, str]] = {"MEETQ_REDIS_URL": "url"}

    mode: str = choice_field("standalone", ("standalone", "cluster", "sentinel"))
    url: str = str_field("redis://127.0.0.1:6379/0", check=check_redis_url)
    # The database number, where the URL's path would give it (sentinel mode has no URL
    # of the master); a cluster has only database 0.
    db: int | None = int_field(None, 0, 100_000, optional=True)
    # mode: cluster. Any reachable node tells the client the rest of the cluster.
    startup_nodes: tuple[str, ...] = str_list_field(check=check_node)
    require_full_coverage: bool = bool_field(True)
    # mode: sentinel. The master is asked of the sentinels on every (re)connect.
    sentinels: tuple[str, ...] = str_list_field(check=check_node)
    sentinel_service: str | None = str_field(None, optional=True)
    sentinel_username: str | None = str_field(None, optional=True)
    sentinel_password: str | None = str_field(None, optional=True, secret=True)
    sentinel_password_file: str | None = str_field(None, optional=True)
    sentinel_password_env: str | None = str_field(None, optional=True, check=_check_variable_name)
    # TLS: on with ssl: true or a rediss:// URL; the server's certificate is checked
    # against ssl_ca_certs (default: the system's CAs).
    ssl: bool = bool_field(False)
    ssl_ca_certs: str | None = str_field(None, optional=True)
    ssl_certfile: str | None = str_field(None, optional=True)
    ssl_keyfile: str | None = str_field(None, optional=True)
    ssl_cert_reqs: str = choice_field("required", ("required", "optional", "none"))
    ssl_check_hostname: bool = bool_field(True)
    # ACL credentials (or in the URL, redis://user:password@host); a password can stay
    # out of the file: read from password_file or the variable password_env names.
    username: str | None = str_field(None, optional=True)
    password: str | None = str_field(None, optional=True, secret=True)
    password_file: str | None = str_field(None, optional=True)
    password_env: str | None = str_field(None, optional=True, check=_check_variable_name)
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

    @property
    def tls(self) -> bool:
        """Whether connections use TLS: ``ssl: true`` or a ``rediss://`` URL."""
        return self.ssl or self.url.startswith("rediss:")

    def __attrs_post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        self._check_mode(parts)
        if not self.tls:
            for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"redis.{key}", getattr(self, key), _TLS_OFF)
        elif parts.scheme == "unix" and self.mode == "standalone":
            raise ConfigError("redis.ssl", True, "TLS is not spoken over a unix socket")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ConfigError("redis.ssl_keyfile", self.ssl_keyfile, "needs redis.ssl_certfile")
        _one_password(self, "")
        _one_password(self, "sentinel_")
        if self.mode == "standalone" or (self.mode == "cluster" and not self.startup_nodes):
            # The URL is used: its credentials and the keys must not both be given.
            if parts.password and _password_keys(self, ""):
                raise ConfigError(
                    f"redis.{_password_keys(self, '')[0]}",
                    SECRET_SHOWN,
                    "redis.url has a password too; give it in one place",
                )
            if parts.username and self.username is not None:
                raise ConfigError(
                    "redis.username", self.username, "redis.url has a user name too; give one"
                )

    def _check_mode(self, parts: urllib.parse.SplitResult) -> None:
        if self.mode != "cluster" and self.startup_nodes:
            raise ConfigError("redis.startup_nodes", list(self.startup_nodes), _ONLY % "cluster")
        if self.mode != "sentinel":
            for key in _SENTINEL_KEYS:
                value = getattr(self, key)
                if value:
                    shown = SECRET_SHOWN if key == "sentinel_password" else value
                    raise ConfigError(f"redis.{key}", shown, _ONLY % "sentinel")
        if self.mode == "cluster":
            if self.db:
                raise ConfigError("redis.db", self.db, "a Redis Cluster has only database 0")
            if not self.startup_nodes:
                if parts.scheme == "unix":
                    raise ConfigError(
                        "redis.url", self.url, "a cluster node is reached by host:port"
                    )
                db = urllib.parse.unquote(parts.path).replace("/", "")
                if db and int(db) != 0:
                    raise ConfigError("redis.url", self.url, "a Redis Cluster has only database 0")
        if self.mode == "sentinel":
            if not self.sentinels:
                raise ConfigError(
                    "redis.sentinels", [], "mode: sentinel needs at least one host:port"
                )
            if self.sentinel_service is None:
                raise ConfigError(
                    "redis.sentinel_service",
                    None,
                    "mode: sentinel needs the name the sentinels monitor the master by",
                )


_TLS_OFF = "TLS is off; set redis.ssl: true or use a rediss:// URL"
_ONLY = "only used with mode: %s"
_SENTINEL_KEYS = (
    "sentinels",
    "sentinel_service",
    "sentinel_username",
    "sentinel_password",
    "sentinel_password_file",
    "sentinel_password_env",
)


def _password_keys(cfg: RedisConfig, prefix: str) -> list[str]:
    """Which of the password keys (``prefix`` ``""`` or ``"sentinel_"``) are set."""
    keys = (f"{prefix}password", f"{prefix}password_file", f"{prefix}password_env")
    return [key for key in keys if getattr(cfg, key) is not None]


def _one_password(cfg: RedisConfig, prefix: str) -> None:
    given = _password_keys(cfg, prefix)
    if len(given) > 1:
        shown = SECRET_SHOWN if given[1] == f"{prefix}password" else getattr(cfg, given[1])
        raise ConfigError(
            f"redis.{given[1]}", shown, f"redis.{given[0]} is set too; give the password once"
        )


def resolve_password(
    cfg: RedisConfig, prefix: str = "", environ: Mapping[str, str] | None = None
) -> str | None:
    """The password the keys give (``prefix`` ``"sentinel_"`` for the sentinels'), read
    from its file or variable now: at connect, not at load (a secret mounted later is
    found); ``ConfigError`` naming the key when it cannot be read."""
    password: str | None = getattr(cfg, f"{prefix}password")
    path: str | None = getattr(cfg, f"{prefix}password_file")
    variable: str | None = getattr(cfg, f"{prefix}password_env")
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"redis.{prefix}password_file", path, f"cannot be read: {exc}"
            ) from None
        # One line, as secret stores mount it; the line end is not part of it.
        password = text.removesuffix("\n").removesuffix("\r")
        if not password:
            raise ConfigError(f"redis.{prefix}password_file", path, "the file is empty")
    elif variable is not None:
        env = os.environ if environ is None else environ
        password = env.get(variable)
        if not password:
            raise ConfigError(
                f"redis.{prefix}password_env", variable, "that environment variable is not set"
            )
    return password
