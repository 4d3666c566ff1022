"""In-process memory backend.

Features: every work-queue and pub/sub guarantee of the contract within one process —
strict priority, leases with expiry, retries, dead letters, dedup, push wake-up,
broadcast between PubSub objects made from the same backend.
Backends built from configs naming one ``memory.broker`` in a process (one event loop)
meet on queue and channel names, as processes on one Redis do (``_backend.py``).
Capabilities: ``limits`` (rate and concurrency limits per type, applied at the claim),
``schedules`` (``_schedules.py``), ``tracking`` (status, cancel, progress and results by
id, ``_tracking.py``); not ``durable``, not ``cross_process``: messages and schedules live
as long as a backend is attached to their broker.
Config keys: ``type: memory`` in ``message_queue`` or ``event_bus``; its own ``memory:``
section, ``MemoryConfig`` in ``_config.py``: ``broker`` (default ``"default"``; another
name for a separate broker, ``isolated`` for a private one) and ``sync_call_timeout``
(the bound of a ``meetq.sync`` call, handed to the broker's loop by ``_sync.py``).
"""

from __future__ import annotations

from meetq.backend import (
    CAP_LIMITS,
    CAP_SCHEDULES,
    CAP_TRACKING,
    Backend,
    BackendContext,
    BackendRegistry,
    BackendSpec,
    SyncBackend,
    hookimpl,
)
from meetq.backends.memory._config import MemoryConfig

__all__ = ["plugin"]


def _create(context: BackendContext) -> Backend:
    from meetq.backends.memory._backend import MemoryBackend

    return MemoryBackend(broker=context.config.section(MemoryConfig).broker)


def _create_sync(context: BackendContext) -> SyncBackend:
    from meetq.backends.memory._sync import MemorySyncBackend

    cfg = context.config.section(MemoryConfig)
    return MemorySyncBackend(broker=cfg.broker, call_timeout=cfg.sync_call_timeout)


class _MemoryPlugin:
    @hookimpl
    def meetq_register_backends(self, registry: BackendRegistry) -> None:
        registry.register(
            BackendSpec(
                name="memory",
                factory=_create,
                capabilities=frozenset({CAP_LIMITS, CAP_SCHEDULES, CAP_TRACKING}),
                config=MemoryConfig,
                description="in-process queues and broadcast; nothing survives the process",
                sync_factory=_create_sync,
            )
        )


plugin = _MemoryPlugin()
