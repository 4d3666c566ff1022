"""pytest fixtures for testing against meetq backends.

Load it from a ``conftest.py`` with ``pytest_plugins = ["meetq.testing.pytest_plugin"]``.

- ``meetq_redis_url`` (session): a private ``redis-server`` on a free loopback port, or
  ``MEETQ_TEST_REDIS_URL``. Without redis-server the test is skipped, except when ``CI``
  is set: then it fails, so a CI run can never pass by skipping every Redis test.
- ``meetq_redis_server`` (function): a private server of the test's own, which the test
  may ``stop()`` and ``start()`` again on the same port.
- ``meetq_namespace`` (function): a key prefix no other test uses.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from meetq.testing._redis_server import RedisServer, RedisServerUnavailable, env_redis_url

__all__ = ["meetq_namespace", "meetq_redis_server", "meetq_redis_url"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and a real Redis is required: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def meetq_redis_url() -> Iterator[str]:
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
    return f"mqt{uuid.uuid4().hex[:12]}"
