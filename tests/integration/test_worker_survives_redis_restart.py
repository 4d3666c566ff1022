"""A worker rides out a Redis outage: it keeps retrying, then carries on by itself."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from meetq import BackendUnavailableError, Message, MessageQueue, initialize_queue_system
from meetq.testing._redis_server import RedisServer
from meetq.testing.work_queue_suite import eventually


async def test_worker_survives_a_redis_restart(
    meetq_redis_server: RedisServer, meetq_namespace: str
) -> None:
    qm = await initialize_queue_system(
        {
            "redis": {
                "url": meetq_redis_server.url,
                "key_prefix": meetq_namespace,
                "socket_connect_timeout": "1s",
            },
            "message_queue": {"type": "redis", "poll_interval": "50ms", "visibility_timeout": "2s"},
            "event_bus": {"enabled": False},
            "task_dispatcher": {"enabled": False},
        }
    )
    mq = qm.get_message_queue()
    assert mq is not None
    seen: list[str] = []

    @mq.handler("job")
    async def job(msg: Message) -> None:
        seen.append(msg.payload["when"])

    async with qm:
        await mq.publish(Message(type="job", payload={"when": "before"}))
        await eventually(lambda: seen == ["before"])

        await asyncio.to_thread(meetq_redis_server.stop)
        # While it is down, publishing says so with a meetq error; nothing is half-stored.
        with pytest.raises(BackendUnavailableError):
            await mq.publish(Message(type="job", payload={"when": "down"}))

        await asyncio.to_thread(meetq_redis_server.start)
        # Same port, empty server (no persistence): the worker reconnects on its own.
        await eventually(_publishes(mq), timeout=20)
        await eventually(lambda: "after" in seen, timeout=20)
    assert "down" not in seen


def _publishes(mq: MessageQueue) -> Callable[[], Awaitable[bool]]:
    """A check that succeeds once a publish goes through again."""

    async def check() -> bool:
        try:
            await mq.publish(Message(type="job", payload={"when": "after"}))
        except BackendUnavailableError:
            return False
        return True

    return check


async def test_start_can_be_retried_after_redis_was_down(
    meetq_redis_server: RedisServer, meetq_namespace: str
) -> None:
    qm = await initialize_queue_system(
        {
            "redis": {
                "url": meetq_redis_server.url,
                "key_prefix": meetq_namespace,
                "socket_connect_timeout": "1s",
            },
            "message_queue": {"type": "redis", "poll_interval": "50ms"},
            "event_bus": {"type": "redis_pubsub", "namespace": meetq_namespace},
            "task_dispatcher": {"enabled": False},
        }
    )
    mq = qm.get_message_queue()
    assert mq is not None
    done: list[str] = []

    @mq.handler("job")
    async def job(msg: Message) -> None:
        done.append(msg.id)

    await asyncio.to_thread(meetq_redis_server.stop)
    try:
        with pytest.raises(BackendUnavailableError):
            await qm.start()
        await asyncio.to_thread(meetq_redis_server.start)
        await qm.start()  # a second try starts what the first could not
        sent = await mq.publish(Message(type="job"))
        await eventually(lambda: done == [sent], timeout=20)
    finally:
        await qm.stop()
