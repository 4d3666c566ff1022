"""Connections to Redis: client options, bounded time, error translation.

Bounded time (docs/reliability.md): the client meetq builds from ``redis.*`` has a
socket timeout, a connect timeout, TCP keepalive and health checks on pooled
connections, so every generic command ends within a bound. The hand-packed hot paths
(the work queue's EVALSHA, Pub/Sub's PUBLISH) use connections of their own without
redis-py's per-command timers (``untimed_pool``) and enforce the same ``socket_timeout``
with one shared timer (``SharedDeadline``); the listeners find a silent peer by PING.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from typing import Any, Final

import attrs
import redis.asyncio as aioredis
import redis.exceptions

from meetq.backends.redis._config import RedisConfig, node_address, resolve_password
from meetq.core.errors import (
    BackendAccessDeniedError,
    BackendUnavailableError,
    ValidationError,
)

__all__ = [
    "DRIVER_ERRORS",
    "SYNC",
    "Bounds",
    "Face",
    "blocking_client",
    "bounds_of",
    "build_client",
    "check_client",
    "client_options",
    "connection_kwargs",
    "close_client",
    "close_sync_client",
    "tls_options",
    "translate_errors",
    "translated",
    "untimed_pool",
    "untimed_pool_of",
]


#: What a redis-py call raises when Redis is not there or refuses: its own errors (cluster
#: redirections, ``ClusterDownError``, ``TryAgainError`` and ``MasterDownError`` among
#: them), socket errors, and the cluster client's routing errors, which are no
#: ``RedisError`` (``SlotNotCoveredError`` and every other ``RedisClusterException``).
DRIVER_ERRORS: Final = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
    OSError,
)


# What to check when the server refused this client; one text for every path.
_CREDENTIALS_HELP = (
    "set redis.username and redis.password (or password_file / password_env), or put "
    "them in redis.url"
)
_RIGHTS_HELP = "grant the user the rights docs/deployment.md lists"
_TLS_HELP = (
    "check redis.ssl_ca_certs (the CA that signed the server's certificate), "
    "ssl_check_hostname and the host name in redis.url"
)


def translated(what: str, exc: Exception) -> BackendUnavailableError:
    """The meetq error a redis-py (or socket) error becomes: ``BackendAccessDeniedError``
    when the server refused this client (authentication or an ACL), otherwise
    ``BackendUnavailableError``; a failed TLS handshake says it was the certificate."""
    error: BackendUnavailableError
    text = str(exc)
    if isinstance(exc, redis.exceptions.AuthenticationError) or "unauthenticated" in text:
        # Redis answers NOAUTH to a small first command, but a large one (more than 10
        # arguments, as a work-queue script call has) from a client that has not
        # authenticated gets "Protocol error: unauthenticated multibulk length".
        error = BackendAccessDeniedError(
            f"redis: {what} failed: authentication failed: the server needs credentials "
            f"this client did not send or that it refused ({text}); {_CREDENTIALS_HELP}",
            backend="redis",
            reason="authentication",
        )
    elif isinstance(exc, redis.exceptions.NoPermissionError):
        error = BackendAccessDeniedError(
            f"redis: {what} failed: the ACL user lacks a right (NOPERM {text}); {_RIGHTS_HELP}",
            backend="redis",
            reason="permission",
        )
    elif _is_certificate_error(exc):
        error = BackendUnavailableError(
            f"redis: {what} failed: TLS certificate verification failed ({text}); {_TLS_HELP}",
            backend="redis",
        )
    else:
        error = BackendUnavailableError(f"redis: {what} failed: {text}", backend="redis")
    error.__cause__ = exc
    return error


def _is_certificate_error(exc: BaseException) -> bool:
    # redis-py wraps the ssl error in a ConnectionError whose text keeps the reason.
    seen: BaseException | None = exc
    for _ in range(8):  # a chain, not a cycle: a few links are enough
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn any redis-py error raised inside into ``BackendUnavailableError``."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise translated(what, exc) from exc


def client_options(cfg: RedisConfig) -> dict[str, Any]:
    """redis-py keyword arguments for the bounds of a client built from ``cfg``."""
    options: dict[str, Any] = {
        "socket_timeout": cfg.socket_timeout or None,
        # redis-py falls back to socket_timeout for None; 0 means no limit here.
        "socket_connect_timeout": cfg.socket_connect_timeout or None,
        # redis-py PINGs a pooled connection before a command only when it sat idle this
        # long; a connection in steady use pays nothing (each reply moves the next check).
        "health_check_interval": cfg.health_check_interval,
        "max_connections": cfg.max_connections,
    }
    # Keepalive is a TCP option: a unix socket connection refuses the argument.
    if cfg.tcp_keepalive and not (cfg.mode == "standalone" and cfg.url.startswith("unix:")):
        options["socket_keepalive"] = True
        options["socket_keepalive_options"] = _keepalive_options(cfg)
    return options


def _keepalive_options(cfg: RedisConfig) -> dict[int, int]:
    # macOS names the idle time TCP_KEEPALIVE; a platform without an option keeps its
    # default rather than failing every connect.
    idle = "TCP_KEEPIDLE" if hasattr(socket, "TCP_KEEPIDLE") else "TCP_KEEPALIVE"
    wanted = {
        idle: cfg.tcp_keepalive_idle,
        "TCP_KEEPINTVL": cfg.tcp_keepalive_interval,
        "TCP_KEEPCNT": cfg.tcp_keepalive_count,
    }
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


@attrs.frozen(kw_only=True)
class Bounds:
    """The limits a client's pool was configured with; None where it sets none."""

    socket_timeout: float | None
    connect_timeout: float | None
    health_check_interval: float | None


def connection_kwargs(client: Any) -> dict[str, Any]:
    """The options ``client`` makes its connections with: its pool's, or a
    ``RedisCluster``'s own ``connection_kwargs``, shared by every node; {} if unknown."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None) or getattr(client, "connection_kwargs", {})
    return dict(kwargs)


def bounds_of(client: Any) -> Bounds:
    """What ``client`` bounds: redis-py's ``Redis`` (or anything with its
    ``connection_pool``), a Sentinel ``master_for`` client, or a ``RedisCluster``."""
    kwargs = connection_kwargs(client)

    def seconds(key: str) -> float | None:
        value = kwargs.get(key)
        return float(value) if value else None

    return Bounds(
        socket_timeout=seconds("socket_timeout"),
        connect_timeout=seconds("socket_connect_timeout"),
        health_check_interval=seconds("health_check_interval"),
    )


def untimed_pool(client: Any) -> Any:
    """A new pool like ``client``'s, for a hand-packed path that bounds calls itself.

    Without ``socket_timeout``: redis-py would run every send under ``asyncio.wait_for``
    (a task per command) and arm a timer around every read, which together cost about
    as much as the rest of a publish; the caller bounds each call with a
    ``SharedDeadline`` of the client's socket_timeout instead, connecting included (the
    greeting a new connection waits for is read without a timer here). Without health
    checks: they would PING on a connection another task may be reading (a subscriber),
    and the hot paths probe an idle connection through the pool's checkout anyway.

    A full pool waits for a connection to come back (``BlockingConnectionPool``) rather
    than failing, for as long as the client's socket_timeout allows: the call's
    ``SharedDeadline`` includes that wait. The limit is the client pool's.
    """
    shared = client.connection_pool
    kwargs = shared.connection_kwargs
    return untimed_pool_of(shared.connection_class, shared.max_connections, kwargs)


def untimed_pool_of(connection_class: Any, max_connections: int, options: dict[str, Any]) -> Any:
    """``untimed_pool`` from its parts: the connection class, the limit, the options
    (for one node of a ``RedisCluster``, whose nodes are not pools)."""
    kwargs = dict(options)
    wait = kwargs.get("socket_timeout") or None
    kwargs["socket_timeout"] = None
    kwargs["health_check_interval"] = 0
    return aioredis.BlockingConnectionPool(
        connection_class=connection_class,
        max_connections=max_connections,
        timeout=wait,
        **kwargs,
    )


def blocking_client(cfg: RedisConfig) -> Any:
    """The asyncio client built from ``cfg`` (``build_client``)."""
    return build_client(cfg, _ASYNC)


# -- building a client from the redis: section ---------------------------------------


@attrs.frozen
class Face:
    """One face of redis-py: the classes ``build_client`` makes a client of."""

    redis: Any
    cluster: Any
    cluster_node: Any
    sentinel: Any
    pool: Any  # BlockingConnectionPool
    connection: Any
    ssl_connection: Any
    parse_url: Any


def _faces() -> tuple[Face, Face]:
    import redis as sync
    import redis.asyncio.cluster
    import redis.asyncio.connection
    import redis.cluster
    import redis.connection

    asynchronous = Face(
        redis=aioredis.Redis,
        cluster=aioredis.RedisCluster,
        cluster_node=redis.asyncio.cluster.ClusterNode,
        sentinel=aioredis.Sentinel,
        pool=aioredis.BlockingConnectionPool,
        connection=aioredis.Connection,
        ssl_connection=aioredis.SSLConnection,
        parse_url=redis.asyncio.connection.parse_url,
    )
    blocking = Face(
        redis=sync.Redis,
        cluster=sync.RedisCluster,
        cluster_node=redis.cluster.ClusterNode,
        sentinel=sync.Sentinel,
        pool=sync.BlockingConnectionPool,
        connection=sync.Connection,
        ssl_connection=sync.SSLConnection,
        parse_url=redis.connection.parse_url,
    )
    return asynchronous, blocking


_ASYNC, SYNC = _faces()


def tls_options(cfg: RedisConfig) -> dict[str, Any]:
    """redis-py's TLS arguments for ``cfg`` (empty when TLS is off)."""
    if not cfg.tls:
        return {}
    options: dict[str, Any] = {
        "ssl_cert_reqs": cfg.ssl_cert_reqs,
        "ssl_check_hostname": cfg.ssl_check_hostname,
    }
    for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if getattr(cfg, key) is not None:
            options[key] = getattr(cfg, key)
    return options


def _credentials(cfg: RedisConfig, prefix: str = "") -> dict[str, Any]:
    options: dict[str, Any] = {}
    username = getattr(cfg, f"{prefix}username")
    password = resolve_password(cfg, prefix)
    if username is not None:
        options["username"] = username
    if password is not None:
        options["password"] = password
    return options


def build_client(cfg: RedisConfig, face: Face) -> Any:
    """The client ``cfg`` describes, of ``face`` (asyncio or blocking redis-py): a
    ``Redis`` on a ``BlockingConnectionPool`` (a full pool waits, at most
    ``socket_timeout``, the bound of every call, for a connection instead of raising
    ``Too many connections``), a ``RedisCluster``, or the ``master_for`` client of a
    ``Sentinel``. The same bounds, keepalive, credentials and TLS in every mode."""
    options = client_options(cfg)
    options.update(_credentials(cfg))
    options.update(tls_options(cfg))
    if cfg.mode == "cluster":
        return _cluster_client(cfg, face, options)
    if cfg.mode == "sentinel":
        return _sentinel_client(cfg, face, options)
    url_options = dict(face.parse_url(cfg.url))  # host, port, db, credentials, query
    connection_class = url_options.pop("connection_class", face.connection)
    if cfg.tls and connection_class is face.connection:
        connection_class = face.ssl_connection
    if cfg.db is not None:
        url_options["db"] = cfg.db
    pool = face.pool(
        connection_class=connection_class,
        timeout=options["socket_timeout"],
        **{**options, **url_options},
    )
    # The client owns its pool: closing it closes the pool's connections.
    return face.redis.from_pool(pool)


def _cluster_client(cfg: RedisConfig, face: Face, options: dict[str, Any]) -> Any:
    if cfg.startup_nodes:
        addresses = [node_address(node) for node in cfg.startup_nodes]
    else:
        url_options = face.parse_url(cfg.url)
        addresses = [(url_options.get("host", "127.0.0.1"), url_options.get("port", 6379))]
        for key in ("username", "password"):
            if key in url_options:
                options[key] = url_options[key]
    return face.cluster(
        startup_nodes=[face.cluster_node(host, port) for host, port in addresses],
        require_full_coverage=cfg.require_full_coverage,
        ssl=cfg.tls,
        **options,
    )


def _sentinel_client(cfg: RedisConfig, face: Face, options: dict[str, Any]) -> Any:
    # The sentinels are asked with the same bounds and TLS, their own credentials.
    sentinel_options = {
        key: value
        for key, value in options.items()
        if key.startswith(("socket_", "ssl_")) or key == "health_check_interval"
    }
    sentinel_options.update(_credentials(cfg, "sentinel_"))
    if cfg.tls:
        sentinel_options["ssl"] = True
    sentinel = face.sentinel(
        [node_address(node) for node in cfg.sentinels], sentinel_kwargs=sentinel_options
    )
    assert cfg.sentinel_service is not None  # RedisConfig requires it in this mode
    return sentinel.master_for(cfg.sentinel_service, ssl=cfg.tls, db=cfg.db or 0, **options)


async def close_client(client: Any) -> None:
    """Close a client ``build_client`` made (asyncio), the sentinels' clients too."""
    await client.aclose()
    for sentinel in _sentinel_clients(client):
        await sentinel.aclose()


def close_sync_client(client: Any) -> None:
    """Close a blocking client ``build_client`` made, the sentinels' clients too."""
    client.close()
    for sentinel in _sentinel_clients(client):
        sentinel.close()


def _sentinel_clients(client: Any) -> list[Any]:
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    return list(getattr(manager, "sentinels", []))


def check_client(client: Any, *, asynchronous: bool) -> None:
    """Refuse a redis-py client of the wrong face: a blocking one for the asyncio backend
    (its calls would block the event loop) or an asyncio one for ``meetq.sync``. Anything
    else is used as given (fakeredis subclasses redis-py's classes, so it is checked too)."""
    import redis as sync

    if asynchronous and isinstance(client, sync.Redis | sync.RedisCluster):
        raise ValidationError(
            "redis",
            client,
            "a blocking client; this needs an asyncio one (redis.asyncio.Redis, "
            "RedisCluster or Sentinel(...).master_for(...)); give blocking clients to "
            "meetq.sync",
        )
    if not asynchronous and isinstance(client, aioredis.Redis | aioredis.RedisCluster):
        raise ValidationError(
            "redis",
            client,
            "an asyncio client; this needs a blocking one (redis.Redis, redis.RedisCluster "
            "or a sync Sentinel master_for client)",
        )
