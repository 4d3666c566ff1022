"""A worker process killed with SIGKILL mid-handler loses nothing (real Redis only)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import meetq
from meetq import Message
from meetq.testing.work_queue_suite import eventually

WORKER = Path(__file__).with_name("_kill_worker.py")


async def _read_started(proc: asyncio.subprocess.Process, count: int) -> set[str]:
    assert proc.stdout is not None
    started: set[str] = set()
    while len(started) < count:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line, f"worker exited early with {proc.returncode}"
        kind, _, message_id = line.decode().strip().partition(" ")
        if kind == "STARTED":
            started.add(message_id)
    return started


async def test_sigkilled_worker_messages_are_redelivered(
    meetq_redis_url: str, meetq_namespace: str
) -> None:
    config = {
        "redis": {"url": meetq_redis_url, "key_prefix": meetq_namespace},
        "message_queue": {
            "type": "redis",
            "queue_name": "jobs",
            "visibility_timeout": "500ms",
            "poll_interval": "50ms",
            "workers": 8,
        },
        "event_bus": {"enabled": False},
    }
    qm = await meetq.initialize_queue_system(config)
    mq = qm.get_message_queue()
    assert mq is not None
    published = set(
        await mq.publish_batch([Message(type="job", payload={"i": i}) for i in range(5)])
    )

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
        started = await _read_started(proc, 5)
        assert started == published
        assert await mq.processing_count() == 5
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 30) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    redelivered: dict[str, int] = {}

    @mq.handler("job")
    async def job(msg: Message) -> None:
        redelivered[msg.id] = msg.attempt

    async with qm:
        await eventually(lambda: len(redelivered) == 5, timeout=30)
        await eventually(lambda: _all_processed(mq), timeout=30)
        assert (await mq.stats())["dead_letter_count"] == 0
    assert set(redelivered) == published
    assert set(redelivered.values()) == {2}  # the killed attempt was charged


async def _all_processed(mq: meetq.MessageQueue) -> bool:
    stats = await mq.stats()
    return bool(stats["total_processed"] == 5 and stats["processing_count"] == 0)
