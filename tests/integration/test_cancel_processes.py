"""Cancel and status across processes on real Redis (issue 11).

A worker child runs handlers that hold until cancelled; this process publishes, sees
the child's delivery in ``status()`` (worker, attempt, progress), cancels it, and the
child's handler stops (a bounded wait, not a timed assertion) and is never retried.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import meetq
from meetq import Message
from meetq.testing import eventually

WORKER = Path(__file__).with_name("_cancel_worker.py")
WAIT = 30.0  # the bound on one line from the child


async def test_a_handler_cancelled_from_another_process_stops_and_is_not_retried(
    meetq_redis_url: str, meetq_namespace: str
) -> None:
    qm = await meetq.initialize_queue_system(
        {
            "redis": {"url": meetq_redis_url, "key_prefix": meetq_namespace},
            "message_queue": {"type": "redis", "queue_name": "jobs", "result_ttl": "60s"},
            "event_bus": {"enabled": False},
        }
    )
    mq = qm.get_message_queue()
    assert mq is not None
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        meetq_redis_url,
        meetq_namespace,
        "jobs",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stdin is not None
    lines: list[list[str]] = []

    async def line() -> list[str]:
        assert proc.stdout is not None
        raw = await asyncio.wait_for(proc.stdout.readline(), WAIT)
        assert raw, f"worker exited early with {proc.returncode}"
        words = raw.decode().split()
        lines.append(words)
        return words

    try:
        ready, worker_name = await line()
        assert ready == "READY"
        first = await mq.publish(Message(type="hold"))
        second = await mq.publish(Message(type="hold"))
        started = {tuple(await line()), tuple(await line())}
        assert started == {("STARTED", first, "1"), ("STARTED", second, "1")}

        # Seen from this process: running, in the child, with its progress.
        async def reported() -> bool:
            return (await mq.status(first)).progress == 0.5

        await eventually(reported, timeout=WAIT)
        status = await mq.status(first)
        assert (status.state, status.worker, status.attempt) == ("running", worker_name, 1)
        assert status.progress_info == {"stage": "holding"} and status.started_at is not None

        assert await mq.cancel(first) is True
        assert await line() == ["CANCELLED", first]
        assert (await mq.status(first)).state == "cancelled"
        assert (await mq.status(second)).state == "running"  # only the one named
        assert await mq.cancel(first) is False

        # The worker lives on and the cancelled message never comes back: a message
        # published after it runs, and its result arrives by push.
        marker = await mq.publish(Message(type="quick", payload={"n": 7}))
        assert await mq.result(marker, timeout=WAIT) == {"n": 7}
        assert await mq.cancel(second) is True
        assert await line() == ["CANCELLED", second]
        stats = await mq.stats()
        assert stats["total_cancelled"] == 2
        assert stats["total_retried"] == 0 and stats["total_failed"] == 0
        assert stats["processing_count"] == 0 and stats["queue_length"]["total"] == 0
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), WAIT)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        rest = (await proc.stdout.read()).decode().split("\n")
        lines.extend(r.split() for r in rest if r)
        await qm.stop()
    assert proc.returncode == 0
    starts = [words[1] for words in lines if words and words[0] == "STARTED"]
    assert sorted(starts) == sorted([first, second])  # each ran once: not retried
