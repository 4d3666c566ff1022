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
- ``meetq_namespace`` (function): a key prefix no other test uses.
- the ``meetq_requires(*capabilities)`` mark (``meetq.testing.requires``), registered so
  ``--strict-markers`` accepts it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from meetq.testing._redis_server import RedisServer, RedisServerUnavailable, env_redis_url

__all__ = ["meetq_namespace", "meetq_redis_server", "meetq_redis_url", "pytest_configure"]


def pytest_configure(config: pytest.Config) -> None:
    """Register the suite's capability mark."""
    # Imported here: the mark's module is small, but the plugin loads in every session.
    from meetq.testing._marks import MARK_HELP

    config.addinivalue_line("markers", MARK_HELP)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and a real Redis is required: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def meetq_redis_url() -> Iterator[str]:
    """A real Redis for the session: ``MEETQ_TEST_REDIS_URL`` or a private redis-server."""
    url = env_redis_url()
    if url is not None:
        yield url
        return
    try:
        server = RedisServer()
        server.start()
    except RedisServerUnavailable as exc:
        _unavailable(str(exc))
        raise AssertionError("unreachable") from exc
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def meetq_redis_server() -> Iterator[RedisServer]:
    """A private redis-server of this test's own, which it may stop and start again."""
    try:
        server = RedisServer()
        server.start()
    except RedisServerUnavailable as exc:
        _unavailable(str(exc))
        raise AssertionError("unreachable") from exc
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def meetq_namespace() -> str:
    """A key prefix no other test uses."""
    return f"mqt{uuid.uuid4().hex[:12]}"
