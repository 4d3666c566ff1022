"""One PubSub carries every subscription of a process on one Redis connection."""

from __future__ import annotations

import redis.asyncio as aioredis

from meetq import PubSubMessage, initialize_queue_system
from meetq.testing import Collector
from meetq.testing._redis_server import RedisServer


async def _pubsub_connections(admin: aioredis.Redis) -> int:
    clients = await admin.client_list(_type="pubsub")
    return len(clients)


async def test_every_subscription_shares_one_connection(
    meetq_redis_server: RedisServer, meetq_namespace: str
) -> None:
    config = {
        "redis": {"url": meetq_redis_server.url},
        "message_queue": {"enabled": False},
        "task_dispatcher": {"enabled": False},
        "event_bus": {"type": "redis_pubsub", "namespace": meetq_namespace},
    }
    admin = aioredis.Redis.from_url(meetq_redis_server.url)
    try:
        qm = await initialize_queue_system(config)
        async with qm:
            ps = qm.get_pubsub()
            assert ps is not None
            collectors = [Collector() for _ in range(6)]
            for i, got in enumerate(collectors[:4]):
                await ps.subscribe(f"room{i}", got)
            await ps.psubscribe("meeting.*", collectors[4])
            await ps.psubscribe("stream.*", collectors[5])
            assert await _pubsub_connections(admin) == 1
            # And that one connection really receives on every subscription.
            for i in range(4):
                await ps.publish(f"room{i}", PubSubMessage(type=f"r{i}"))
            await ps.publish("meeting.a", PubSubMessage(type="m"))
            await ps.publish("stream.b", PubSubMessage(type="s"))
            for got in collectors:
                await got.wait_for(1)
            assert await _pubsub_connections(admin) == 1
        assert await _pubsub_connections(admin) == 0
    finally:
        await admin.aclose()
