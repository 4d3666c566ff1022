"""APP of tests/integration/test_cli_worker.py: ``meetq worker _cli_app:build --config F``.

Handler ``job`` records ``"<id> <attempt> <pid>"`` in the Redis list ``<prefix>:started``
when it begins and in ``<prefix>:done`` when it ends (``<prefix>`` is the config's
``redis.key_prefix``, the test's namespace). With ``payload["hold"]`` it first waits for
the key ``<prefix>:gate`` (at most 60 s), so a test decides when handlers may finish.
"""

from __future__ import annotations

import asyncio
import os

import redis.asyncio

import meetq
from meetq import Message


async def build(config: str | None) -> meetq.QueueManager:
    qm = await meetq.initialize_queue_system(config)
    section = qm.config.section(meetq.RedisConfig)
    prefix = section.key_prefix
    client = redis.asyncio.Redis.from_url(section.url)
    mq = qm.get_message_queue()
    assert mq is not None

    @mq.handler("job")
    async def job(msg: Message) -> None:
        record = f"{msg.id} {msg.attempt} {os.getpid()}"
        await client.rpush(f"{prefix}:started", record)
        if msg.payload.get("hold"):
            for _ in range(6000):  # a bound, not a schedule: the test sets the gate
                if await client.exists(f"{prefix}:gate"):
                    break
                await asyncio.sleep(0.01)
        await client.rpush(f"{prefix}:done", record)

    return qm


def no_parameter() -> meetq.QueueManager:
    raise AssertionError("never called: the tests pass --config to it, which is refused")


async def fails_in_worker_1(config: str | None) -> meetq.QueueManager:
    """``build``, except in the supervisor's child 1, which fails at once every time."""
    if os.environ.get("MEETQ_WORKER_INDEX") == "1":
        raise RuntimeError("worker 1 cannot start (on purpose)")
    return await build(config)
