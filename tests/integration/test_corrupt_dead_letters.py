"""Dead letters whose stored record was damaged by hand never make a call raise.

The record of a dead letter (``P dinfo``, see docs/message-queue.md) is plain Redis
data: anyone with access can overwrite it. ``dead_letters()`` reports such a record
with an error saying why it could not be read; ``requeue_dead_letters()`` leaves it in
place (it no longer says which ready set it belongs to) instead of losing it.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from meetq import Message, MessageQueue, initialize_queue_system
from meetq.testing.work_queue_suite import eventually

DEEP = b"[" * 100_000 + b"]" * 100_000


async def test_corrupt_dead_letter_records_are_reported_and_kept(
    meetq_redis_url: str, meetq_namespace: str
) -> None:
    qm = await initialize_queue_system(
        {
            "redis": {"url": meetq_redis_url, "key_prefix": meetq_namespace},
            "message_queue": {
                "type": "redis",
                "queue_name": "bad",
                "max_retries": 0,
                "poll_interval": "50ms",
            },
            "event_bus": {"enabled": False},
            "task_dispatcher": {"enabled": False},
        }
    )
    mq = qm.get_message_queue()
    assert isinstance(mq, MessageQueue)

    @mq.handler("job")
    async def job(msg: Message) -> None:
        raise RuntimeError("fails on purpose")

    # The records to be damaged die first, so they are the oldest dead letters: a
    # requeue must look past them to the good ones ("z..." also wins a same-ms tie).
    corrupt = ["deepinfo", "notjson", "wrongtype"]
    good = ["zdeepbody", "zgood"]
    ids = corrupt + good
    async with qm:
        for message_id in corrupt:
            await mq.publish(Message(type="job", id=message_id))
        await eventually(lambda: _count(mq, len(corrupt)))
        for message_id in good:
            await mq.publish(Message(type="job", id=message_id))
        await eventually(lambda: _count(mq, len(ids)))
        await mq.stop(0)

        client = aioredis.Redis.from_url(meetq_redis_url)
        try:
            prefix = f"{meetq_namespace}:{{bad}}:"
            await client.hset(f"{prefix}dinfo", "notjson", b"\xff not json")
            await client.hset(f"{prefix}dinfo", "deepinfo", DEEP)
            await client.hset(f"{prefix}dinfo", "wrongtype", b'{"type": 7, "priority": "x"}')
            await client.hset(f"{prefix}m:body", "zdeepbody", DEEP)
        finally:
            await client.aclose()

        dead = {d.id: d for d in await mq.dead_letters()}
        assert sorted(dead) == sorted(ids)
        assert dead["zgood"].message is not None and "fails on purpose" in dead["zgood"].error
        for message_id in corrupt:
            record = dead[message_id]
            assert "corrupt dead-letter record" in record.error, record.error
            assert f"{prefix}dinfo" in record.error
            # The body was fine, so the message itself still comes back.
            assert record.message is not None and record.type == "job"
        assert dead["zdeepbody"].message is None and dead["zdeepbody"].raw == DEEP
        assert "fails on purpose" in dead["zdeepbody"].error
        assert sorted(d.id for d in await mq.dead_letters(3)) == corrupt  # the oldest three

        # Only records that still say where they belong go back, even from behind the
        # unreadable oldest ones; none is lost.
        assert await mq.requeue_dead_letters(1) == 1
        assert await mq.requeue_dead_letters(5) == 1
        assert await mq.queue_length() == 2
        left = sorted(d.id for d in await mq.dead_letters())
        assert left == ["deepinfo", "notjson", "wrongtype"]
        assert await mq.dead_letter_count() == 3


async def _count(mq: MessageQueue, n: int) -> bool:
    return await mq.dead_letter_count() == n
