"""Hand-off at enqueue on a real redis-server: an idle (parked) worker gets the next
publish of its types straight from ``enqueue_one.lua``, with nothing of at-least-once,
priority or attempts given up.

A delivery is known to be a hand-off when no ``exchange`` result of the worker named it
(the worker's backend is wrapped in ``RecordingBackend``, which sees every result).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
import redis.asyncio as aioredis

from meetq import Message, MessageQueue
from meetq.backends.redis._backend import RedisBackend
from meetq.testing import RecordingBackend
from meetq.testing.work_queue_suite import eventually

WORKER = Path(__file__).with_name("_kill_worker.py")
QUICK = {"poll_interval": "50ms", "visibility_timeout": "1s", "queue_name": "jobs"}


class Worker:
    """A MessageQueue on its own client, recording which ids its exchanges claimed."""

    def __init__(self, url: str, prefix: str, **config: Any) -> None:
        self.client = aioredis.Redis.from_url(url)
        self.recording = RecordingBackend(RedisBackend(self.client, key_prefix=prefix))
        self.claimed: list[str] = []
        self.mq = MessageQueue(self.recording, **{**QUICK, **config})

        async def exchange(call: Any, *args: Any, **kwargs: Any) -> Any:
            result = await call(*args, **kwargs)
            self.claimed += [c.id for c in result.claimed]
            return result

        self.recording.around("exchange", exchange)

    async def parked(self, raw: aioredis.Redis, prefix: str) -> bool:
        return bool(await raw.hlen(f"{prefix}:{{jobs}}:parked"))

    async def aclose(self) -> None:
        await self.mq.stop()
        await self.recording.aclose()
        await self.client.aclose()


@pytest_asyncio.fixture
async def raw(meetq_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(meetq_redis_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def producer(raw: aioredis.Redis, meetq_namespace: str) -> AsyncIterator[MessageQueue]:
    backend = RedisBackend(raw, key_prefix=meetq_namespace)
    yield MessageQueue(backend, **QUICK)
    await backend.aclose()


async def test_a_handed_off_message_runs_once_with_attempt_1(
    meetq_redis_url: str,
    meetq_namespace: str,
    raw: aioredis.Redis,
    producer: MessageQueue,
) -> None:
    worker = Worker(meetq_redis_url, meetq_namespace)
    runs: list[tuple[str, int]] = []

    @worker.mq.handler("job")
    async def job(msg: Message) -> None:
        runs.append((msg.id, msg.attempt))

    try:
        await worker.mq.start()
        await eventually(lambda: worker.parked(raw, meetq_namespace))
        message_id = await producer.publish(Message(type="job"))
        await eventually(lambda: runs == [(message_id, 1)])
        await eventually(lambda: _settled(producer, processed=1))
        assert message_id not in worker.claimed  # it came by hand-off, not by a claim
        assert runs == [(message_id, 1)]
    finally:
        await worker.aclose()


async def test_a_worker_killed_after_a_hand_off_loses_nothing(
    meetq_redis_url: str,
    meetq_namespace: str,
    raw: aioredis.Redis,
    producer: MessageQueue,
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        meetq_redis_url,
        meetq_namespace,
        "jobs",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        await eventually(lambda: _parked(raw, meetq_namespace), timeout=30)
        message_id = await producer.publish(Message(type="job"))
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.decode().split() == ["STARTED", message_id]
        assert await producer.processing_count() == 1  # leased by the hand-off
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 30) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    worker = Worker(meetq_redis_url, meetq_namespace)
    runs: list[tuple[str, int]] = []

    @worker.mq.handler("job")
    async def job(msg: Message) -> None:
        runs.append((msg.id, msg.attempt))

    try:
        await worker.mq.start()
        await eventually(lambda: runs == [(message_id, 2)], timeout=30)
        await eventually(lambda: _settled(producer, processed=1))
    finally:
        await worker.aclose()


async def test_a_stale_parked_entry_stores_the_message_for_another_worker(
    meetq_redis_url: str,
    meetq_namespace: str,
    raw: aioredis.Redis,
    producer: MessageQueue,
) -> None:
    gone = Worker(meetq_redis_url, meetq_namespace)

    @gone.mq.handler("job")
    async def never(msg: Message) -> None:
        raise AssertionError("the gone worker ran a message")

    await gone.mq.start()
    await eventually(lambda: gone.parked(raw, meetq_namespace))
    # Vanish without unparking, as a killed process does: its subscription ends.
    await gone.recording.aclose()
    await gone.client.aclose()
    assert await _parked(raw, meetq_namespace)
    await gone.mq.stop()  # its last calls fail: the backend is closed

    message_id = await producer.publish(Message(type="job"))
    assert await producer.queue_length() == 1  # stored as ready, not leased to nobody
    assert not await _parked(raw, meetq_namespace)  # and the stale entry dropped

    other = Worker(meetq_redis_url, meetq_namespace)
    runs: list[tuple[str, int]] = []

    @other.mq.handler("job")
    async def job(msg: Message) -> None:
        runs.append((msg.id, msg.attempt))

    try:
        await other.mq.start()
        await eventually(lambda: runs == [(message_id, 1)])
        assert message_id in other.claimed
    finally:
        await other.aclose()


async def test_concurrent_publishes_while_parked_all_run_once(
    meetq_redis_url: str,
    meetq_namespace: str,
    raw: aioredis.Redis,
    producer: MessageQueue,
) -> None:
    worker = Worker(meetq_redis_url, meetq_namespace, workers=4)
    runs: list[tuple[str, int]] = []

    @worker.mq.handler("job")
    async def job(msg: Message) -> None:
        runs.append((msg.id, msg.attempt))
        await asyncio.sleep(0.01)

    try:
        await worker.mq.start()
        await eventually(lambda: worker.parked(raw, meetq_namespace))
        ids = await asyncio.gather(*(producer.publish(Message(type="job")) for _ in range(40)))
        await eventually(lambda: len(runs) == 40)
        await eventually(lambda: _settled(producer, processed=40))
        assert sorted(runs) == sorted((i, 1) for i in ids)
        assert set(ids) - set(worker.claimed)  # some came by hand-off
        assert (await producer.stats())["dead_letter_count"] == 0
    finally:
        await worker.aclose()


async def test_a_parked_worker_still_takes_the_highest_priority_first(
    meetq_redis_url: str,
    meetq_namespace: str,
    raw: aioredis.Redis,
    producer: MessageQueue,
) -> None:
    worker = Worker(meetq_redis_url, meetq_namespace, workers=1)
    order: list[str] = []
    first_started = asyncio.Event()
    release = asyncio.Event()

    @worker.mq.handler("job")
    async def job(msg: Message) -> None:
        order.append(msg.payload["name"])
        first_started.set()
        await release.wait()

    try:
        await worker.mq.start()
        await eventually(lambda: worker.parked(raw, meetq_namespace))
        # The first goes to the parked worker; its one slot is then taken, so the rest
        # wait and are claimed in priority order.
        await producer.publish(Message(type="job", payload={"name": "first"}))
        await first_started.wait()
        for name, priority in [("low", "LOW"), ("critical", "CRITICAL"), ("normal", "NORMAL")]:
            await producer.publish(Message(type="job", priority=priority, payload={"name": name}))
        release.set()
        await eventually(lambda: len(order) == 4)
        assert order == ["first", "critical", "normal", "low"]
    finally:
        await worker.aclose()


async def _parked(raw: aioredis.Redis, prefix: str) -> bool:
    return bool(await raw.hlen(f"{prefix}:{{jobs}}:parked"))


async def _settled(mq: MessageQueue, *, processed: int) -> bool:
    stats = await mq.stats()
    return bool(stats["total_processed"] == processed and stats["processing_count"] == 0)
