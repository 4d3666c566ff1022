"""The sync producer on a real redis-server: fork safety, bounded time, a full pool.

Each test uses a key namespace of its own; the frozen-server tests a private server
(frozen with SIGSTOP, thawed whatever happens). Upper bounds are correctness bounds
with slack for a loaded machine, not performance figures.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from meetq import BackendUnavailableError, Message, PubSubMessage
from meetq.sync import SyncProducer
from meetq.testing import RedisServer, free_port

FORK_SCRIPT = Path(__file__).with_name("_sync_fork.py")
SLACK = 3.0
SHORT = 1.0


def _config(url: str, namespace: str, **redis: Any) -> dict[str, Any]:
    return {
        "redis": {"url": url, "key_prefix": namespace, **redis},
        "message_queue": {"type": "redis", "queue_name": namespace},
        "event_bus": {"type": "redis_pubsub", "namespace": namespace},
    }


@pytest.fixture
def server(meetq_redis_server: RedisServer) -> Iterator[RedisServer]:
    try:
        yield meetq_redis_server
    finally:
        meetq_redis_server.thaw()


def test_forked_child_gets_its_own_pool(meetq_redis_url: str, meetq_namespace: str) -> None:
    done = subprocess.run(
        [sys.executable, str(FORK_SCRIPT), meetq_redis_url, meetq_namespace],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # 1 before the fork, 200 from the child, 200 from the parent's threads, 1 after.
    assert done.stdout.strip() == "402"


def test_a_full_pool_makes_threads_wait_not_fail(
    meetq_redis_url: str, meetq_namespace: str
) -> None:
    config = _config(meetq_redis_url, meetq_namespace, max_connections=2)
    with SyncProducer(config) as producer, ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda i: producer.publish(Message(type="job")), range(400)))
        assert len(set(ids)) == 400
        assert producer.stats()["total_published"] == 400


def _timed(call: Any) -> tuple[BaseException | None, float]:
    start = time.monotonic()
    try:
        call()
    except Exception as exc:
        return exc, time.monotonic() - start
    return None, time.monotonic() - start


def test_calls_against_a_frozen_server_end_within_the_bound(
    server: RedisServer, meetq_namespace: str
) -> None:
    config = _config(
        server.url, meetq_namespace, socket_timeout=f"{SHORT}s", socket_connect_timeout=f"{SHORT}s"
    )
    with SyncProducer(config) as warm, SyncProducer(config) as cold:
        warm.publish(Message(type="job"))  # a pooled connection, then silence
        server.freeze()
        calls = [
            lambda: warm.publish(Message(type="job")),
            warm.stats,
            lambda: warm.pubsub.publish("news", PubSubMessage(type="x")),
            lambda: cold.publish(Message(type="job")),  # connects: accepted, never greeted
        ]
        for call in calls:
            error, took = _timed(call)
            assert isinstance(error, BackendUnavailableError), error
            assert took < SHORT + SLACK
        server.thaw()
        # It carries on by itself once the server answers again.
        warm.publish(Message(type="job"))
        assert warm.stats()["total_published"] >= 2


def test_no_server_is_a_backend_unavailable_error(meetq_namespace: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with (
        SyncProducer(_config(url, meetq_namespace)) as producer,
        pytest.raises(BackendUnavailableError, match="redis: enqueue_one failed"),
    ):
        producer.publish(Message(type="job"))
