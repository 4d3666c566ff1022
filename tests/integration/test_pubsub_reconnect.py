"""PubSub survives a Redis restart: it reconnects, re-subscribes and says so.

Runs against a private redis-server that the test stops and starts again on the same
port (the ``meetq_redis_server`` fixture). Backoff is short so the test stays fast.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.exceptions

from meetq import BackendUnavailableError, PubSubMessage, initialize_queue_system
from meetq.testing import Collector
from meetq.testing._redis_server import RedisServer

TIMEOUT = 10.0


async def test_reconnects_and_resubscribes_after_restart(
    meetq_redis_server: RedisServer, meetq_namespace: str
) -> None:
    config = {
        "redis": {"url": meetq_redis_server.url, "socket_connect_timeout": "1s"},
        "message_queue": {"enabled": False},
        "task_dispatcher": {"enabled": False},
        "event_bus": {
            "type": "redis_pubsub",
            "namespace": meetq_namespace,
            "reconnect_backoff_base": "20ms",
            "reconnect_backoff_max": "200ms",
        },
    }
    # Two managers, as two services would have: each with its own client and connection.
    qm, other = await initialize_queue_system(config), await initialize_queue_system(config)
    async with qm, other:
        sub, pub = qm.get_pubsub(), other.get_pubsub()
        assert sub is not None and pub is not None
        exact, pattern = Collector(), Collector()
        reconnected = asyncio.Event()
        sub.on_reconnect(reconnected.set)  # a plain callback: run in a thread
        await sub.subscribe("meeting_events", exact)
        await sub.psubscribe("meeting.*", pattern)
        assert await pub.publish("meeting_events", PubSubMessage(type="before")) == 1
        assert await pub.publish("meeting.a", PubSubMessage(type="before")) == 1
        await exact.wait_for(1)
        await pattern.wait_for(1)

        await asyncio.to_thread(meetq_redis_server.stop)

        # While Redis is down: meetq errors only, never a redis.* exception.
        with pytest.raises(BackendUnavailableError) as publish_error:
            await pub.publish("meeting_events", PubSubMessage(type="lost"))
        assert not isinstance(publish_error.value, redis.exceptions.RedisError)
        with pytest.raises(BackendUnavailableError):
            await pub.publish_batch("meeting_events", [PubSubMessage(type="lost")])
        with pytest.raises(BackendUnavailableError):
            await sub.subscribe("while_down", exact)
        assert "while_down" not in sub.subscribed_channels()

        await asyncio.to_thread(meetq_redis_server.start)
        # The callback runs only once every subscription is confirmed again.
        await asyncio.wait_for(reconnected.wait(), TIMEOUT)
        stats = await sub.stats()
        assert stats["reconnects"] == 1

        assert await pub.publish("meeting_events", PubSubMessage(type="after")) == 1
        assert await pub.publish("meeting.b", PubSubMessage(type="after")) == 1
        await exact.wait_for(2)
        await pattern.wait_for(2)
        assert [m.type for m in exact.messages] == ["before", "after"]
        assert [(m.type, m.channel) for m in pattern.messages] == [
            ("before", "meeting.a"),
            ("after", "meeting.b"),
        ]
        # New subscriptions work on the new connection.
        late = Collector()
        await sub.subscribe("late", late)
        assert await pub.publish("late", PubSubMessage(type="x")) == 1
        await late.wait_for(1)
