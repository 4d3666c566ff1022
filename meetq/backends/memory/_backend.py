"""The memory backend object: one set of queues and one broker per instance."""

from __future__ import annotations

from typing import Any

from meetq.core.errors import ClosedError
from meetq.core.protocols import PubSubTransport, WorkQueueBackend, WorkQueueOptions

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Queues by name and a broadcast broker, shared by everything built from this object."""

    name = "memory"
    capabilities: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self._queues: dict[str, WorkQueueBackend] = {}
        self._broker: Any = None
        self._closed = False

    def work_queue(self, queue_name: str, options: WorkQueueOptions) -> WorkQueueBackend:
        from meetq.backends.memory._work_queue import MemoryWorkQueue

        self._check_open()
        # The queue's state lives in its object, so one name must give one object. The
        # options were checked by core (every opener asks for the same ones).
        queue = self._queues.get(queue_name)
        if queue is None:
            queue = self._queues[queue_name] = MemoryWorkQueue(queue_name, options)
        return queue

    def pubsub_transport(self) -> PubSubTransport:
        self._check_open()
        if self._broker is None:
            from meetq.backends.memory._pubsub import MemoryBroker

            self._broker = MemoryBroker()
        transport: PubSubTransport = self._broker.transport()
        return transport

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the memory backend was closed; build a new one")

    async def aclose(self) -> None:
        """Close every queue and transport made from it: as on every backend, each
        later call on them raises ``ClosedError``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for queue in self._queues.values():
            await queue.aclose()
        if self._broker is not None:
            await self._broker.aclose()
