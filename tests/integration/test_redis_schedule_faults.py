"""Schedules against corrupt keys on a real redis-server: every schedule script checks
before it writes, names the key, and one bad record stops no other schedule."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from meetq import Message, MessageQueue
from meetq.backends.redis._backend import RedisBackend
from meetq.core.errors import BackendUnavailableError
from meetq.testing import QUICK, eventually


@pytest_asyncio.fixture
async def raw(meetq_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(meetq_redis_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def queue(raw: aioredis.Redis, meetq_namespace: str) -> AsyncIterator[MessageQueue]:
    backend = RedisBackend(raw, key_prefix=meetq_namespace)
    mq = MessageQueue(backend, **{**QUICK, "queue_name": "s"})
    yield mq
    await mq.stop(grace=0)
    await backend.aclose()


async def test_a_sched_key_of_another_type_fails_naming_it_and_writes_nothing(
    raw: aioredis.Redis, queue: MessageQueue, meetq_namespace: str
) -> None:
    key = f"{meetq_namespace}:{{s}}:sched"
    await raw.set(key, "oops")
    for call in (
        queue.schedule("a", Message(type="t"), every=60),
        queue.schedules(),
        queue.unschedule("a"),
    ):
        with pytest.raises(BackendUnavailableError, match=f"corrupt key {key}"):
            await call
    assert await raw.get(key) == b"oops"
    await raw.delete(key)
    assert [s.name for s in [await queue.schedule("a", Message(type="t"), every=60)]] == ["a"]


async def test_a_record_overwritten_by_hand_is_listed_with_an_error_and_never_fired(
    raw: aioredis.Redis, queue: MessageQueue, meetq_namespace: str
) -> None:
    key = f"{meetq_namespace}:{{s}}:sched"
    await raw.hset(key, "bad", "no spaces here")
    seen: list[Message] = []

    @queue.handler("t")
    async def t(message: Message) -> None:
        seen.append(message)

    await queue.schedule("good", Message(type="t"), every="100ms", misfire_grace="30s")
    bad = next(s for s in await queue.schedules() if s.name == "bad")
    assert "record of it is corrupt" in bad.error
    await queue.start()
    await eventually(lambda: len(seen) >= 2)
    assert {m.headers["meetq-schedule"] for m in seen} == {"good"}
    assert await raw.hget(key, "bad") == b"no spaces here"
