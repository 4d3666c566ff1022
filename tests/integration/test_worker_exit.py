"""A handler calling sys.exit() fails its message; the worker process lives on (real Redis).

Once, SystemExit from a handler ended the worker with status 0, which a supervisor reads
as a clean exit, and the message's lease expired instead of being settled.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import meetq
from meetq import Message
from meetq.testing.work_queue_suite import eventually

WORKER = Path(__file__).with_name("_exit_worker.py")


async def test_system_exit_in_a_handler_neither_ends_the_worker_nor_reads_as_clean(
    meetq_redis_url: str, meetq_namespace: str
) -> None:
    qm = await meetq.initialize_queue_system({
        "redis": {"url": meetq_redis_url, "key_prefix": meetq_namespace},
        "message_queue": {"type": "redis", "queue_name": "jobs"},
        "event_bus": {"enabled": False},
    })
    mq = qm.get_message_queue()
    assert mq is not None
    await mq.publish_batch(
        [Message(type="exit", max_retries=0), Message(type="exit_async", max_retries=0)]
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), meetq_redis_url, meetq_namespace, "jobs",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        await eventually(lambda: _dead(mq, 2), timeout=30)
        job_id = await mq.publish(Message(type="job"))
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.decode().strip() == f"RAN {job_id}", f"worker exited: {proc.returncode}"
        assert proc.returncode is None  # still working after both SystemExits
        errors = sorted(d.error for d in await mq.dead_letters())
        assert errors == ["SystemExit: 0", "SystemExit: 0"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) != 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await qm.stop()


async def _dead(mq: meetq.MessageQueue, count: int) -> bool:
    return await mq.dead_letter_count() == count
