"""meetq_example_backend: a third-party backend as an outside author would write one.

Features: every work-queue and pub/sub guarantee of meetq's contract, within one
process. The storage is borrowed: the backend composes meetq's own memory backend and
hands out its work queues and broadcast transports, so this package is only the wiring
a real backend needs — a ``Backend`` object, a factory, a hook and an entry point.
Capabilities: none beyond the contract (not ``durable``, not ``cross_process``).
Config keys: ``type: example`` in ``message_queue`` or ``event_bus``; no others.
Entry point (see the ``.dist-info`` beside this package)::

    [meetq]
    example = meetq_example_backend:plugin
"""

from __future__ import annotations

from meetq import BackendContext, BackendRegistry, BackendSpec
from meetq.backends.memory._backend import MemoryBackend
from meetq.core.protocols import PubSubTransport, WorkQueueBackend, WorkQueueOptions
from meetq.plugins import hookimpl

__all__ = ["ExampleBackend", "plugin"]


class ExampleBackend:
    """Queues and broadcast of one private ``MemoryBackend``, under the name ``example``."""

    name = "example"
    capabilities: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self._store = MemoryBackend()

    def work_queue(self, queue_name: str, options: WorkQueueOptions) -> WorkQueueBackend:
        return self._store.work_queue(queue_name, options)

    def pubsub_transport(self) -> PubSubTransport:
        return self._store.pubsub_transport()

    async def aclose(self) -> None:
        await self._store.aclose()


def _create(context: BackendContext) -> ExampleBackend:
    # A real backend would read its settings from context.config here.
    return ExampleBackend()


class _ExamplePlugin:
    @hookimpl
    def meetq_register_backends(self, registry: BackendRegistry) -> None:
        registry.register(
            BackendSpec(
                name="example",
                factory=_create,
                description="worked example of a third-party backend (in memory)",
            )
        )


plugin = _ExamplePlugin()
