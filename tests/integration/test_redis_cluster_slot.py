"""A queue lives in one Redis Cluster slot: the whole life of a message on a cluster node.

A one-node cluster owns every slot, so a plain client can talk to it, and Redis still
refuses any multi-key command or script whose keys span slots (CROSSSLOT). Running the
queue's every script there shows that each one keeps to the queue's hash tag.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from meetq import Message, MessageQueue, initialize_queue_system
from meetq.testing._redis_server import RedisServer, RedisServerUnavailable, free_port
from meetq.testing.work_queue_suite import eventually


@pytest.fixture
def cluster_node() -> Iterator[RedisServer]:
    server = RedisServer()
    server.extra_args = (
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        str(server.directory / "nodes.conf"),
        "--cluster-port",
        str(free_port()),  # the bus port, else port + 10000
    )
    try:
        server.start()
    except RedisServerUnavailable as exc:
        pytest.fail(f"could not start a cluster-mode redis-server: {exc}")
    try:
        yield server
    finally:
        server.close()


async def _claim_all_slots(url: str) -> None:
    admin = aioredis.Redis.from_url(url)
    try:
        await admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)

        async def ready() -> bool:
            info = await admin.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            return "cluster_state:ok" in text

        await eventually(ready, timeout=20)
    finally:
        await admin.aclose()


async def test_every_queue_script_keeps_to_one_slot(
    cluster_node: RedisServer, meetq_namespace: str
) -> None:
    await _claim_all_slots(cluster_node.url)
    qm = await initialize_queue_system(
        {
            "redis": {"url": cluster_node.url, "key_prefix": meetq_namespace},
            "message_queue": {
                "type": "redis",
                "queue_name": "slot_test",
                "max_retries": 1,
                "retry_backoff_base": "10ms",
                "poll_interval": "50ms",
                "unhandled_timeout": "200ms",
            },
            "event_bus": {"enabled": False},
            "task_dispatcher": {"enabled": False},
        }
    )
    mq = qm.get_message_queue()
    assert mq is not None
    done: list[str] = []

    @mq.handler("ok")
    async def ok(msg: Message) -> None:
        done.append(msg.id)

    @mq.handler("bad")
    async def bad(msg: Message) -> None:
        raise RuntimeError("to the dead-letter queue")

    async with qm:
        await mq.publish(Message(type="ok"))  # the one-message script
        await mq.publish_batch(  # the batch script, dedup keys, a delay
            [Message(type="ok", dedup_key="d1"), Message(type="bad"), Message(type="orphan")]
        )
        await mq.publish(Message(type="ok"), delay=0.05)
        await eventually(lambda: len(done) == 3)  # exchange, extend, heartbeat
        await eventually(lambda: _dead(mq, 2))  # retry, dead-letter, unhandled sweep
        assert await mq.requeue_dead_letters(10) == 2  # requeue
        await eventually(lambda: _dead(mq, 2))
        assert await mq.clear_dead_letters() == 2
        stats = await mq.stats()  # every counter read
    assert stats["total_processed"] == 3


async def _dead(mq: MessageQueue, n: int) -> bool:
    return await mq.dead_letter_count() == n
