"""``stats()`` costs one Redis command (the ``inspect`` script), as the server saw it.

``MONITOR`` on the session's own redis-server lists every command a client sent (the
commands a script runs inside show as ``lua`` and are not round trips); an ``ECHO`` from
the watching client marks the end. The queue is not started, so no listener or janitor
talks to the server meanwhile.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from meetq import Message, initialize_queue_system


async def _sent_by_clients(url: str, action: Any) -> list[str]:
    watcher = aioredis.Redis.from_url(url)
    try:
        async with watcher.monitor() as monitor:
            await action()
            await watcher.echo("meetq-test-end")
            sent: list[str] = []
            while True:
                info = await monitor.next_command()
                if "meetq-test-end" in info["command"]:
                    return sent
                if info["client_type"] != "lua":
                    sent.append(info["command"].split(" ", 1)[0].upper())
    finally:
        await watcher.aclose()


async def test_stats_is_one_round_trip(meetq_redis_url: str, meetq_namespace: str) -> None:
    qm = await initialize_queue_system(
        {
            "redis": {"url": meetq_redis_url, "key_prefix": meetq_namespace},
            "message_queue": {"type": "redis", "queue_name": "stats_rt"},
            "event_bus": {"enabled": False},
            "task_dispatcher": {"enabled": False},
        }
    )
    try:
        mq = qm.get_message_queue()
        assert mq is not None
        await mq.publish_batch([Message(type="a"), Message(type="b", priority="high")])
        # The first look learns the queue's types: one more script call, once.
        assert (await mq.stats())["unhandled_count"] == 2
        seen: dict[str, Any] = {}

        async def look() -> None:
            seen.update(await mq.stats())

        assert await _sent_by_clients(meetq_redis_url, look) == ["EVALSHA"]
        assert seen["total_published"] == 2 and seen["unhandled_count"] == 2
        assert seen["queue_length"]["high"] == 1 and seen["queue_length"]["total"] == 2
        # A type this handle has not seen: still counted, at the cost of a second call.
        await mq.publish(Message(type="c"))
        assert await _sent_by_clients(meetq_redis_url, look) == ["EVALSHA", "EVALSHA"]
        assert seen["unhandled_count"] == 3
    finally:
        await qm.stop()


async def test_every_inspection_call_is_one_round_trip(
    meetq_redis_url: str, meetq_namespace: str
) -> None:
    qm = await initialize_queue_system(
        {
            "redis": {"url": meetq_redis_url, "key_prefix": meetq_namespace},
            "message_queue": {"type": "redis", "queue_name": "looks_rt"},
            "event_bus": {"enabled": False},
            "task_dispatcher": {"enabled": False},
        }
    )
    try:
        mq = qm.get_message_queue()
        assert mq is not None
        await mq.publish_batch([Message(type="a"), Message(type="b", priority="low")])
        await mq.stats()  # the handle learns the queue's types (see above)
        seen: dict[str, Any] = {}
        looks = {
            "queue_length": lambda: mq.queue_length(),
            "queue_length(low)": lambda: mq.queue_length("low"),
            "processing_count": lambda: mq.processing_count(),
            "dead_letter_count": lambda: mq.dead_letter_count(),
            "dead_letters": lambda: mq.dead_letters(10),
        }
        for call in looks.values():
            await call()  # a script's first use on a server loads it (NOSCRIPT, SCRIPT LOAD)
        for name, call in looks.items():

            async def look(name: str = name, call: Any = call) -> None:
                seen[name] = await call()

            assert await _sent_by_clients(meetq_redis_url, look) == ["EVALSHA"], name
        assert seen["queue_length"] == 2 and seen["queue_length(low)"] == 1
        assert seen["processing_count"] == 0 and seen["dead_letter_count"] == 0
        assert seen["dead_letters"] == []
    finally:
        await qm.stop()
