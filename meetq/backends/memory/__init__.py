"""In-process memory backend.

Features: every work-queue and pub/sub guarantee of the contract within one process —
strict priority, leases with expiry, retries, dead letters, dedup, push wake-up,
broadcast between PubSub objects made from the same backend.
Capabilities: none beyond the contract (not ``durable``, not ``cross_process``):
messages live as long as the backend object.
Config keys: ``type: memory`` in ``message_queue`` or ``event_bus``; no others.
"""

from __future__ import annotations

from meetq.backend import Backend, BackendContext, BackendRegistry, BackendSpec, hookimpl

__all__ = ["plugin"]


def _create(context: BackendContext) -> Backend:
    from meetq.backends.memory._backend import MemoryBackend

    return MemoryBackend()


class _MemoryPlugin:
    @hookimpl
    def meetq_register_backends(self, registry: BackendRegistry) -> None:
        registry.register(
            BackendSpec(
                name="memory",
                factory=_create,
                capabilities=frozenset(),
                description="in-process queues and broadcast; nothing survives the process",
            )
        )


plugin = _MemoryPlugin()
