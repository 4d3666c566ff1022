"""Log records on a message's path carry queue, message_id, type, attempt and worker as
``extra`` fields (meetq.observability.LOG_FIELDS)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from meetq import Message, MessageQueue
from meetq.backends.memory._backend import MemoryBackend
from meetq.observability import LOG_FIELDS
from meetq.testing import eventually


async def test_failure_timeout_and_drop_records_carry_the_message_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mq = MessageQueue(
        MemoryBackend(),
        queue_name="logs",
        worker_name="w-7",
        poll_interval=0.05,
        max_retries=1,
        retry_backoff_base=0.01,
        retry_backoff_max=0.01,
        enable_dead_letter_queue=False,
    )

    @mq.handler("bad")
    async def bad(message: Message) -> None:
        raise RuntimeError("nope")

    @mq.handler("slow")
    async def slow(message: Message) -> None:
        await asyncio.sleep(10)

    failing = Message(type="bad")
    late = Message(type="slow", timeout=0.05, max_retries=0)
    with caplog.at_level(logging.WARNING, logger="meetq.message_queue"):
        await mq.publish_batch([failing, late])
        async with mq:
            await eventually(lambda: (mq._local["handler_timeouts"] == 1 and _dropped(caplog) == 2))
    records = [r for r in caplog.records if getattr(r, "message_id", None) is not None]
    assert records, caplog.text
    for record in records:
        assert all(hasattr(record, field) for field in LOG_FIELDS)
        assert record.queue == "logs" and record.worker == "w-7"  # type: ignore[attr-defined]
    seen = {
        (r.message_id, r.type, r.attempt, "dropping" in r.getMessage())  # type: ignore[attr-defined]
        for r in records
    }
    assert seen == {
        (failing.id, "bad", 1, False),
        (failing.id, "bad", 2, False),
        (failing.id, "bad", 2, True),
        (late.id, "slow", 1, False),
        (late.id, "slow", 1, True),
    }


def _dropped(caplog: pytest.LogCaptureFixture) -> int:
    return sum("dropping" in r.getMessage() for r in caplog.records)
