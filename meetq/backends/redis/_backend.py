"""The Redis backend object: one client, queues by name, one Pub/Sub transport factory.

How its calls are bounded in time is in ``_connection.py``.
"""

from __future__ import annotations

from typing import Any

from meetq.backends.redis._config import RedisConfig
from meetq.backends.redis._connection import blocking_client, check_client, close_client
from meetq.backends.redis._pubsub import RedisPubSubTransport
from meetq.backends.redis._work_queue import RedisWorkQueue
from meetq.core.protocols import (
    CAP_CROSS_PROCESS,
    CAP_DURABLE,
    CAP_LIMITS,
    CAP_SCHEDULES,
    CAP_TRACKING,
    PubSubTransport,
    WorkQueueBackend,
    WorkQueueOptions,
)
from meetq.core.registry import BackendContext

__all__ = ["RedisBackend"]


class RedisBackend:
    """Work queues and Pub/Sub on one Redis client.

    The client is used as given (a ``redis.asyncio.Redis``, ``RedisCluster``, a Sentinel
    ``master_for`` client or ``fakeredis.FakeAsyncRedis``; a blocking client is refused)
    and then left open; a client the backend made itself from the ``redis:`` section
    (``mode``: standalone, cluster or sentinel) is closed by ``aclose``.
    """

    name = "redis"
    capabilities: frozenset[str] = frozenset(
        {CAP_DURABLE, CAP_CROSS_PROCESS, CAP_LIMITS, CAP_SCHEDULES, CAP_TRACKING}
    )

    def __init__(
        self,
        client: Any,
        *,
        key_prefix: str = "meetq",
        owns_client: bool = False,
        reconnect_backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self._owns_client = owns_client
        self._reconnect_backoff = reconnect_backoff
        self._queues: list[RedisWorkQueue] = []  # to close their listeners
        self._closed = False

    @classmethod
    def from_context(cls, context: BackendContext) -> RedisBackend:
        cfg = context.config.section(RedisConfig)
        # Reconnecting is the transport contract's (any networked transport does it),
        # so its backoff keys are the event bus's, not this section's.
        eb = context.config.event_bus
        backoff = (eb.reconnect_backoff_base, eb.reconnect_backoff_max)
        if context.client is not None:
            check_client(context.client, asynchronous=True)
            return cls(context.client, key_prefix=cfg.key_prefix, reconnect_backoff=backoff)
        client = blocking_client(cfg)
        return cls(client, key_prefix=cfg.key_prefix, owns_client=True, reconnect_backoff=backoff)

    def work_queue(self, queue_name: str, options: WorkQueueOptions) -> WorkQueueBackend:
        # The state lives in Redis, so any number of handles may share one name; core
        # keeps one per name and checks the options.
        queue = RedisWorkQueue(self.client, queue_name, options, key_prefix=self.key_prefix)
        self._queues.append(queue)
        return queue

    def pubsub_transport(self) -> PubSubTransport:
        return RedisPubSubTransport(self.client, backoff=self._reconnect_backoff)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for queue in self._queues:
            await queue.aclose()
        if self._owns_client:
            await close_client(self.client)
