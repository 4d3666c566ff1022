"""pytest fixtures for testing against meetq backends, and the suite's mark.

Installing meetq registers this module with pytest through a ``pytest11`` entry point
named after the module (pyproject.toml), so every test session has its fixtures: no
``pytest_plugins`` line is needed, and a leftover one finds the module registered under
its own name and does nothing (a second registration would raise).
``-p no:meetq.testing.pytest_plugin`` turns it off.

- ``meetq_redis_url`` (session): a private ``redis-server`` on a free loopback port, or
  ``MEETQ_TEST_REDIS_URL``. Without redis-server the test is skipped, except when ``CI``
  is set: then it fails, so a CI run can never pass by skipping every Redis test.
- ``meetq_redis_server`` (function): a private server of the test's own, which the test
  may ``stop()`` and ``start()`` again on the same port.
- ``meetq_redis_sentinel`` (session): a ``RedisSentinelSetup`` — a master, two replicas
  and three sentinels watching it as ``SERVICE`` — that a test may fail over
  (``kill_master()``, ``freeze_master()``); it is healed before every test that uses it,
  so each finds a whole setup. Skipped or failed like ``meetq_redis_url``.
- ``meetq_redis_cluster`` (session): a private 3-primary/3-replica Redis Cluster
  (``meetq.testing._redis_cluster.LocalRedisCluster``; ``.startup_nodes``, ``.primaries()``,
  ``.owner_of(key)``, ``.kill_primary(port)``). Without redis-server or redis-cli it is a
  skip, or a failure when ``CI`` is set. A test that kills a node ``restart()``s it before
  it ends, so the next test finds three healthy primaries again.
- ``meetq_redis_tls_server`` (session): a private redis-server speaking TLS only, with
  ACL users and no anonymous access (``meetq.testing._redis_tls``); skipped (failed in
  CI) like the others without redis-server or openssl.
- ``meetq_namespace`` (function): a key prefix no other test uses.
- the ``meetq_requires(*capabilities)`` mark (``meetq.testing.requires``), registered so
  ``--strict-markers`` accepts it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import pytest

from meetq.testing._redis_cluster import LocalRedisCluster
from meetq.testing._redis_sentinel import RedisSentinelSetup
from meetq.testing._redis_server import RedisServer, RedisServerUnavailable, env_redis_url
from meetq.testing._redis_tls import TlsRedisServer

__all__ = [
    "meetq_namespace",
    "meetq_redis_cluster",
    "meetq_redis_sentinel",
    "meetq_redis_server",
    "meetq_redis_tls_server",
    "meetq_redis_url",
    "pytest_configure",
]


def pytest_configure(config: pytest.Config) -> None:
    """Register the suite's capability mark."""
    # Imported here: the mark's module is small, but the plugin loads in every session.
    from meetq.testing._marks import MARK_HELP

    config.addinivalue_line("markers", MARK_HELP)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and a real Redis is required: {reason}", pytrace=False)
    pytest.skip(reason)


class _Startable(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...


_T = TypeVar("_T", bound=_Startable)


@contextlib.contextmanager
def _started(make: Callable[[], _T]) -> Iterator[_T]:
    """``make()`` started, closed afterwards; skipped (failed under CI) if unavailable."""
    try:
        started = make()
        started.start()
    except RedisServerUnavailable as exc:
        _unavailable(str(exc))
        raise AssertionError("unreachable") from exc
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="session")
def meetq_redis_url() -> Iterator[str]:
    """A real Redis for the session: ``MEETQ_TEST_REDIS_URL`` or a private redis-server."""
    url = env_redis_url()
    if url is not None:
        yield url
        return
    with _started(RedisServer) as server:
        yield server.url


@pytest.fixture
def meetq_redis_server() -> Iterator[RedisServer]:
    """A private redis-server of this test's own, which it may stop and start again."""
    with _started(RedisServer) as server:
        yield server


@pytest.fixture(scope="session")
def _meetq_sentinel_setup() -> Iterator[RedisSentinelSetup]:
    with _started(RedisSentinelSetup) as setup:
        yield setup


@pytest.fixture
def meetq_redis_sentinel(_meetq_sentinel_setup: RedisSentinelSetup) -> RedisSentinelSetup:
    """The session's Sentinel setup, whole again (a test before may have failed it over)."""
    _meetq_sentinel_setup.heal()
    return _meetq_sentinel_setup


@pytest.fixture(scope="session")
def meetq_redis_cluster() -> Iterator[LocalRedisCluster]:
    """A private 3-primary Redis Cluster (one replica each) for the whole session."""
    with _started(LocalRedisCluster) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def meetq_redis_tls_server() -> Iterator[TlsRedisServer]:
    """A TLS-only redis-server with ACL users for the session (tests add their own
    users with ``ACL SETUSER``, named after their namespace)."""
    with _started(TlsRedisServer) as server:
        yield server


@pytest.fixture
def meetq_namespace() -> str:
    """A key prefix no other test uses."""
    return f"mqt{uuid.uuid4().hex[:12]}"
