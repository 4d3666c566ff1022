"""The token buckets' key corrupted by hand on a real redis-server: a limit never lapses,
nothing fails halfway, and the other types keep flowing (docs/reliability.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
import redis.asyncio as aioredis

from meetq import initialize_queue_system
from meetq.core._limits import TypeLimit
from meetq.core.protocols import StoredMessage, WorkQueueBackend, WorkQueueOptions
from meetq.testing import eventually

QUEUE = "limitfaults"


@pytest_asyncio.fixture
async def raw(meetq_redis_url: str, meetq_namespace: str) -> AsyncIterator[WorkQueueBackend]:
    qm = await initialize_queue_system(
        {
            "redis": {"url": meetq_redis_url, "key_prefix": meetq_namespace},
            "message_queue": {"type": "redis", "queue_name": "unused"},
            "event_bus": {"enabled": False},
            "task_dispatcher": {"enabled": False},
        }
    )
    mq = qm.get_message_queue()
    assert mq is not None
    limits = (TypeLimit(type="mail", rate_per_ms=1 / 3_600_000, burst=2, bucket=2.0),)
    yield mq.backend.work_queue(QUEUE, WorkQueueOptions(limits=limits))
    await qm.stop()


@pytest_asyncio.fixture
async def client(meetq_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(meetq_redis_url)
    yield client
    await client.aclose()


def _messages(prefix: str, message_type: str, n: int) -> list[StoredMessage]:
    return [
        StoredMessage(id=f"{prefix}{i}", type=message_type, priority=1, body=b"{}")
        for i in range(n)
    ]


async def _claim(raw: WorkQueueBackend, *types: str) -> Any:
    return await raw.exchange([], types=list(types), claim=10, lease_ms=5000)


async def test_a_bucket_key_of_the_wrong_type_holds_the_limited_type_back(
    raw: WorkQueueBackend, client: aioredis.Redis, meetq_namespace: str
) -> None:
    key = f"{meetq_namespace}:{{{QUEUE}}}:limits"
    await client.set(key, "not a hash")
    await raw.enqueue(_messages("m", "mail", 3))
    await raw.enqueue(_messages("o", "other", 2))
    got = await _claim(raw, "mail", "other")
    assert sorted(c.id for c in got.claimed) == ["o0", "o1"]  # the others flow
    assert "mail" in getattr(raw, "corrupt_types", {})  # named, logged
    assert await client.get(key) == b"not a hash"  # nothing written over it
    await client.delete(key)  # repaired: the bucket starts full again
    got = await _claim(raw, "mail")
    assert [(c.id, c.attempt) for c in got.claimed] == [("m0", 1), ("m1", 1)]


async def test_a_bucket_field_meetq_did_not_write_counts_as_full(
    raw: WorkQueueBackend, client: aioredis.Redis, meetq_namespace: str
) -> None:
    key = f"{meetq_namespace}:{{{QUEUE}}}:limits"
    await client.hset(key, "mail", "garbage")
    await raw.enqueue(_messages("m", "mail", 4))
    got = await _claim(raw, "mail")
    assert [c.id for c in got.claimed] == ["m0", "m1"]  # burst 2, never more
    assert (await client.hget(key, "mail") or b"").startswith(b"0.")  # rewritten
    assert (await _claim(raw, "mail")).claimed == []


async def test_an_idle_worker_is_parked_for_its_unlimited_types_only(
    meetq_redis_url: str, meetq_namespace: str, client: aioredis.Redis
) -> None:
    # A hand-off at enqueue is a claim that bypasses exchange.lua: a limited type must
    # never get one, so its parked:T never names the worker.
    qm = await initialize_queue_system(
        {
            "redis": {"url": meetq_redis_url, "key_prefix": meetq_namespace},
            "message_queue": {
                "type": "redis",
                "queue_name": QUEUE,
                "rate_limits": {"mail": "1/s"},
                "poll_interval": "50ms",
            },
            "event_bus": {"enabled": False},
            "task_dispatcher": {"enabled": False},
        }
    )
    mq = qm.get_message_queue()
    assert mq is not None

    @mq.handler("mail")
    async def mail(message: Any) -> None: ...

    @mq.handler("other")
    async def other(message: Any) -> None: ...

    prefix = f"{meetq_namespace}:{{{QUEUE}}}:"
    async with qm:
        await eventually(lambda: client.zcard(prefix + "parked:other"))
        assert await client.zcard(prefix + "parked:mail") == 0
