"""Concurrent publishes on a real redis-server: coalesced, one answer per caller.

Publishes made while round trips are on the wire go out together in the next write (one
EVALSHA each, on one connection); a lone publish goes out at once in its caller's task. The
queue's coalescer counts the two paths (``sent_alone``, ``batches``), which is how the
structural tests below see which path a publish took without timing anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from meetq import Message, MessageQueue, initialize_queue_system
from meetq.core.errors import BackendUnavailableError

QUEUE = "coalesce"


async def _queue(url: str, namespace: str, **redis_keys: Any) -> tuple[Any, MessageQueue]:
    qm = await initialize_queue_system(
        {
            "redis": {"url": url, "key_prefix": namespace, **redis_keys},
            "message_queue": {"type": "redis", "queue_name": QUEUE},
            "event_bus": {"enabled": False},
            "task_dispatcher": {"enabled": False},
        }
    )
    mq = qm.get_message_queue()
    assert mq is not None
    return qm, mq


@pytest_asyncio.fixture
async def raw(meetq_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(meetq_redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def _coalescer(mq: MessageQueue) -> Any:
    return mq._queue._enqueues  # type: ignore[attr-defined]


async def test_a_lone_publish_goes_out_at_once(meetq_redis_url: str, meetq_namespace: str) -> None:
    qm, mq = await _queue(meetq_redis_url, meetq_namespace)
    try:
        pipe = _coalescer(mq)
        for _ in range(20):
            await mq.publish(Message(type="t"))
        # Each one in its caller's own round trip: none waited for a batch.
        assert (pipe.sent_alone, pipe.batches) == (20, 0)
        assert await mq.queue_length() == 20
    finally:
        await qm.stop()


async def test_concurrent_publishes_share_round_trips_and_connections(
    meetq_redis_url: str, meetq_namespace: str, raw: aioredis.Redis
) -> None:
    qm, mq = await _queue(meetq_redis_url, meetq_namespace)
    try:
        await mq.publish(Message(type="t"))  # the connection is made
        before = (await raw.info("clients"))["connected_clients"]
        pipe = _coalescer(mq)
        sent = [Message(type="t", payload={"i": i}) for i in range(1000)]
        assert await asyncio.gather(*(mq.publish(m) for m in sent)) == [m.id for m in sent]
        # The first ones went out alone (one per round trip allowed in flight); the rest,
        # made while those were on the wire, in shared writes.
        assert pipe.sent_alone <= 1 + pipe.max_in_flight
        assert pipe.batches <= 1000 // 8
        # A connection per round trip in flight carried them (not one per publish).
        assert (await raw.info("clients"))["connected_clients"] <= before + pipe.max_in_flight
        assert await mq.queue_length() == 1001
    finally:
        await qm.stop()


async def test_one_failing_script_among_concurrent_publishes_fails_alone(
    meetq_redis_url: str, meetq_namespace: str, raw: aioredis.Redis
) -> None:
    qm, mq = await _queue(meetq_redis_url, meetq_namespace)
    try:
        # The ready set of type "broken" is not a ZSET: its enqueue_one fails at ZADD
        # and undoes its earlier writes; the other messages of the same write are stored.
        ready = f"{meetq_namespace}:{{{QUEUE}}}:ready:broken"
        await raw.set(ready, "not a zset")
        good = [Message(type="t", payload={"i": i}) for i in range(40)]
        broken = Message(type="broken")
        calls = [mq.publish(m) for m in good[:20]]
        calls += [mq.publish(broken)]
        calls += [mq.publish(m) for m in good[20:]]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert _coalescer(mq).batches >= 1  # it went out in a shared write
        failure = results[20]
        assert isinstance(failure, BackendUnavailableError)
        assert ready in str(failure) and "enqueue_one" in str(failure)
        assert results[:20] + results[21:] == [m.id for m in good]
        assert await mq.queue_length() == 40
        assert (await mq.stats())["total_published"] == 40
        # Nothing of it was half-stored: once repaired, the same message is stored.
        await raw.delete(ready)
        assert await mq.publish(broken) == broken.id
        assert await mq.queue_length() == 41
    finally:
        await qm.stop()


@pytest.mark.parametrize("connections", [1, 2])
async def test_a_full_pool_waits_instead_of_failing(
    meetq_redis_url: str, meetq_namespace: str, connections: int
) -> None:
    # With the pool this small, inspection calls and publishes take turns on it.
    qm, mq = await _queue(meetq_redis_url, meetq_namespace, max_connections=connections)
    try:
        publishes = [mq.publish(Message(type="t")) for _ in range(300)]
        looks = [mq.stats() for _ in range(20)]
        lengths = [mq.queue_length() for _ in range(20)]
        results = await asyncio.gather(*publishes, *looks, *lengths)
        assert len(set(results[:300])) == 300
        assert await mq.queue_length() == 300
    finally:
        await qm.stop()
