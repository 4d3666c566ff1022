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
from collections.abc import Iterator
from typing import Any, Final

import attrs
import redis.asyncio as aioredis
import redis.exceptions

from meetq.backends.redis._config import RedisConfig
from meetq.core.errors import BackendUnavailableError

__all__ = [
    "DRIVER_ERRORS",
    "Bounds",
    "blocking_client",
    "bounds_of",
    "client_options",
    "connection_kwargs",
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


def translated(what: str, exc: Exception) -> BackendUnavailableError:
    """The ``BackendUnavailableError`` a redis-py (or socket) error becomes."""
    error = BackendUnavailableError(f"redis: {what} failed: {exc}", backend="redis")
    error.__cause__ = exc
    return error


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn any redis-py error raised inside into ``BackendUnavailableError``."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise translated(what, exc) from exc


def client_options(cfg: RedisConfig) -> dict[str, Any]:
    """redis-py keyword arguments for a client built from ``cfg`` (``Redis.from_url``)."""
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
    if cfg.tcp_keepalive and not cfg.url.startswith("unix:"):
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
    """The asyncio client built from ``cfg``: a full pool waits (at most
    ``socket_timeout``, the bound of every call) for a connection instead of raising
    ``Too many connections``."""
    options = client_options(cfg)
    pool = aioredis.BlockingConnectionPool.from_url(
        cfg.url, timeout=options["socket_timeout"], **options
    )
    return aioredis.Redis.from_pool(pool)
