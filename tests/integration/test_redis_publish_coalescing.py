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
from meetq.backends.redis._scripts import MERGE_MIN
from meetq.core.errors import BackendUnavailableError
from meetq.testing import RedisServer

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
        await mq.publish(Message(type="t"))  # the connection is made, enqueue_one loaded
        await mq.publish_batch([Message(type="t"), Message(type="t")])  # enqueue.lua loaded
        before = (await raw.info("clients"))["connected_clients"]
        scripts_before = await _script_runs(raw)
        pipe = _coalescer(mq)
        pipe.sent_alone = 0
        sent = [Message(type="t", payload={"i": i}) for i in range(1000)]
        assert await asyncio.gather(*(mq.publish(m) for m in sent)) == [m.id for m in sent]
        # The first ones went out alone (one per round trip allowed in flight); the rest,
        # made while those were on the wire, in shared writes.
        assert pipe.sent_alone <= 1 + pipe.max_in_flight
        assert pipe.batches <= 1000 // 8
        # Each shared write ran its publishes as one enqueue.lua script, not one each
        # (a write of fewer than MERGE_MIN sends them as they are).
        runs = await _script_runs(raw) - scripts_before
        assert runs <= pipe.sent_alone + (MERGE_MIN - 1) * pipe.batches
        # A connection per round trip in flight carried them (not one per publish).
        assert (await raw.info("clients"))["connected_clients"] <= before + pipe.max_in_flight
        assert await mq.queue_length() == 1003
    finally:
        await qm.stop()


async def _script_runs(raw: aioredis.Redis) -> int:
    """EVALSHA calls the server has run (this test's server runs one test at a time)."""
    stats = await raw.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_shared_write_keeps_each_publish_as_if_alone(
    meetq_redis_url: str, meetq_namespace: str
) -> None:
    # Types, priorities, delays, a taken id and a dedup key in one shared write: the
    # single publishes go out as one enqueue.lua call, the dedup one as its own script.
    # Fewer than MAX_BATCH queue behind the two sent alone, so one sender writes them
    # all: two writes on two connections in flight at once may reach Redis in either
    # order, and then publish order would not be defined.
    qm, mq = await _queue(meetq_redis_url, meetq_namespace)
    try:
        taken = Message(type="a")
        await mq.publish(taken)
        holder = Message(type="a", dedup_key="k")
        await mq.publish(holder)
        pipe = _coalescer(mq)
        now = [Message(type=t, priority=i % 4, payload={"i": i}) for i in range(20) for t in "ab"]
        later = [Message(type="c", payload={"i": i}) for i in range(10)]
        calls = [mq.publish(m) for m in now]
        calls += [mq.publish(m, delay=600) for m in later]
        calls += [mq.publish(taken), mq.publish(Message(type="a", dedup_key="k"))]
        ids = await asyncio.gather(*calls)
        assert pipe.batches == 1
        assert ids == [m.id for m in now + later] + [taken.id, holder.id]
        stats = await mq.stats()
        assert stats["total_published"] == 2 + 40 + 10
        assert stats["queue_length"]["total"] == 2 + 40 + 10
        assert (await mq._queue.inspect()).delayed == 10  # type: ignore[attr-defined]
        # Strict priority, then publish order, as if each had gone out alone.
        seen: list[str] = []
        everything = asyncio.Event()

        @mq.handler("a")
        async def handle(message: Message) -> None:
            seen.append(message.id)
            if len(seen) == 22:
                everything.set()

        await mq.start()
        await asyncio.wait_for(everything.wait(), 30)
        published = [taken, holder] + [m for m in now if m.type == "a"]
        order = sorted(range(len(published)), key=lambda i: (-published[i].priority, i))
        assert seen == [published[i].id for i in order]
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


async def test_a_shared_write_that_cannot_reach_the_server_fails_each_caller_alone(
    meetq_redis_server: RedisServer, meetq_namespace: str
) -> None:
    server = meetq_redis_server  # this test's own: it stops it
    qm, mq = await _queue(server.url, meetq_namespace, socket_connect_timeout=2)
    try:
        await mq.publish(Message(type="t"))
        server.stop()  # gone: its connections refused, not hanging
        results = await asyncio.gather(
            *(mq.publish(Message(type="t")) for _ in range(50)), return_exceptions=True
        )
        assert _coalescer(mq).batches >= 1
        assert all(isinstance(r, BackendUnavailableError) for r in results)
        assert len({id(r) for r in results}) == 50  # each caller its own error object
    finally:
        await qm.stop()
