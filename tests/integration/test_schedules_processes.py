"""Schedules across real processes on a real Redis: each fire time publishes once.

Three worker processes consume one queue, so each runs the fire loop of an
``every="1s"`` schedule; the test process consumes the fired messages without firing
(``fire_schedules: false``) and checks that over ten fire times none is published twice
(two message ids for one fire time) and none is missing (the fire times step by exactly
one second). Then again with one of the three SIGKILLed mid-run: the two left go on,
and the fire step the dead one may have been in is applied once or not at all.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from datetime import datetime
from pathlib import Path

import meetq
from meetq import Message
from meetq.testing import eventually

WORKER = Path(__file__).with_name("_schedule_worker.py")
FIRES = 10


async def _start_workers(url: str, prefix: str) -> list[asyncio.subprocess.Process]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            url,
            prefix,
            "ticks",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for _ in range(3)
    ]
    for proc in procs:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.strip() == b"READY", line
    return procs


async def _end(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None and proc.stdin is not None:
            proc.stdin.close()
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _fire_ms(message: Message) -> int:
    return round(datetime.fromisoformat(message.headers["meetq-fire-time"]).timestamp() * 1000)


async def _run(url: str, prefix: str, *, kill_one: bool) -> None:
    qm = await meetq.initialize_queue_system(
        {
            "redis": {"url": url, "key_prefix": prefix},
            "message_queue": {
                "type": "redis",
                "queue_name": "ticks",
                "poll_interval": "50ms",
                "fire_schedules": False,
            },
            "event_bus": {"enabled": False},
        }
    )
    mq = qm.get_message_queue()
    assert mq is not None
    ids_by_fire: dict[int, set[str]] = {}

    @mq.handler("tick")
    async def tick(message: Message) -> None:
        ids_by_fire.setdefault(_fire_ms(message), set()).add(message.id)

    procs = await _start_workers(url, prefix)
    try:
        async with qm:
            # A generous grace: a loaded machine publishes a late fire time rather than
            # counting it missed, so what is checked is once-each, not punctuality.
            await mq.schedule("tick", Message(type="tick"), every="1s", misfire_grace="5s")
            if kill_one:
                await eventually(lambda: len(ids_by_fire) >= 3, timeout=30)
                procs[0].send_signal(signal.SIGKILL)
                assert await asyncio.wait_for(procs[0].wait(), 30) == -signal.SIGKILL
            await eventually(lambda: len(ids_by_fire) >= FIRES, timeout=60)
            await mq.unschedule("tick")
            # What was already published is consumed before the counts are read.
            await eventually(lambda: _drained(mq), timeout=30)
    finally:
        await _end(procs)
        await qm.stop()
    doubled = {t: ids for t, ids in ids_by_fire.items() if len(ids) > 1}
    assert doubled == {}, f"fire times published more than once: {doubled}"
    times = sorted(ids_by_fire)
    steps = {b - a for a, b in itertools.pairwise(times)}
    assert steps == {1000}, f"fire times missing between {times}"


async def _drained(mq: meetq.MessageQueue) -> bool:
    stats = await mq.stats()
    return stats["queue_length"]["total"] == 0 and stats["processing_count"] == 0


async def test_three_processes_publish_each_fire_time_once(
    meetq_redis_url: str, meetq_namespace: str
) -> None:
    await _run(meetq_redis_url, meetq_namespace, kill_one=False)


async def test_a_process_killed_mid_run_neither_loses_nor_doubles_a_fire_time(
    meetq_redis_url: str, meetq_namespace: str
) -> None:
    await _run(meetq_redis_url, meetq_namespace, kill_one=True)
