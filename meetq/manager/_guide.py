"""The guide's helpers: the Go guide's package functions, with the meaning it gives them.

``docs/guide-mapping.md`` lists every name of the guide next to its meetq equivalent;
these are the ones that have no method of their own. They compose the components a
``QueueManager`` built, so they live at the manager's level; the component constructors
that start from a config or a client (``message_queue_from``, ``pubsub_from``) live here
too, because building a backend takes the registry, which a component must not import.

Design (why it looks like this):

- Each helper is a thin call on one component, so its rules (validation, errors,
  ordering) stay the component's: nothing is re-implemented here.
- A helper whose component is disabled raises ``ConfigError`` naming the key that
  disabled it (the guide's Go returned ``"... not initialized"``).
- ``register_common_handlers`` registers logging handlers only: the two lifecycle events
  are emitted by ``QueueManager.start()`` / ``stop()`` themselves, so they fire whether
  or not a service registered anything for them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any, TypeVar

from meetq.broadcast._pubsub import PubSub
from meetq.core._durations import parse_duration
from meetq.core._validation import check_text
from meetq.core.config import MeetqConfig, load_config
from meetq.core.errors import ConfigError, ValidationError
from meetq.core.registry import BackendContext, BackendRegistry
from meetq.core.tasks import Task, TaskHandler
from meetq.core.types import LocalEvent, Message, Priority, PubSubMessage
from meetq.inprocess._event_bus import LocalEventBus
from meetq.inprocess._scheduler import TaskScheduler
from meetq.manager._manager import SERVICE_STARTED, SERVICE_STOPPING, QueueManager
from meetq.manager._system import build_registry
from meetq.queue._message_queue import MessageQueue

__all__ = [
    "SYSTEM_EVENTS",
    "emit_local_event",
    "get_queue_stats",
    "message_queue_from",
    "publish_system_event",
    "publish_task",
    "pubsub_from",
    "register_common_handlers",
    "schedule_delayed_task",
    "shutdown_queue_system",
]

log = logging.getLogger("meetq.common_handlers")

#: The PubSub channel of system-wide events (the guide's ``"system_events"``).
SYSTEM_EVENTS = "system_events"

ConfigSource = str | os.PathLike[str] | Mapping[str, Any] | MeetqConfig | None


C = TypeVar("C")


def _needed(component: C | None, section: str, helper: str, needs: str) -> C:
    """``component``, or the ``ConfigError`` naming the section a guide helper needs."""
    if component is None:
        raise ConfigError(f"{section}.enabled", False, f"{helper} needs {needs}")
    return component


def _pubsub(qm: QueueManager, helper: str) -> PubSub:
    return _needed(qm.get_pubsub(), "event_bus", helper, "the PubSub; enable event_bus")


def _event_bus(qm: QueueManager, helper: str) -> LocalEventBus:
    return _needed(qm.get_event_bus(), "event_bus", helper, "the local event bus; enable event_bus")


def _message_queue(qm: QueueManager, helper: str) -> MessageQueue:
    return _needed(qm.get_message_queue(), "message_queue", helper, "the message queue; enable it")


def _scheduler(qm: QueueManager, helper: str) -> TaskScheduler:
    return _needed(
        qm.get_task_scheduler(), "task_scheduler", helper, "the task scheduler; enable it"
    )


async def register_common_handlers(qm: QueueManager, service_name: str) -> None:
    """The guide's ``RegisterCommonHandlers(qm, serviceName)``: log, as ``service_name``,
    every message on the ``system_events`` channel and the ``service_started`` /
    ``service_stopping`` events of the local bus (which ``qm.start()`` / ``qm.stop()``
    emit). Components that are disabled are skipped, as in the guide.

    Call it before ``await qm.start()`` (then the subscription is confirmed by
    ``start()``) or after (then it returns once the subscription is confirmed). The log
    lines go to the ``meetq.common_handlers`` logger at INFO. Calling it twice registers
    the handlers twice.
    """
    if not isinstance(service_name, str) or not service_name:
        raise ValidationError("service_name", service_name, "expected a non-empty string")
    check_text("service_name", service_name)
    bus = qm.get_event_bus()
    if bus is not None:

        async def on_started(event: LocalEvent) -> None:
            log.info("[%s] service started event received", service_name)

        async def on_stopping(event: LocalEvent) -> None:
            log.info("[%s] service stopping event received", service_name)

        bus.on(SERVICE_STARTED, on_started)
        bus.on(SERVICE_STOPPING, on_stopping)
    pubsub = qm.get_pubsub()
    if pubsub is not None:

        async def on_system_event(message: PubSubMessage) -> None:
            log.info("[%s] received system event %r", service_name, message.type)

        await pubsub.subscribe(SYSTEM_EVENTS, on_system_event)


async def publish_system_event(
    qm: QueueManager, event_type: str, payload: Mapping[str, Any] | None = None
) -> int:
    """The guide's ``PublishSystemEvent``: publish ``event_type`` on ``system_events`` with
    source ``"system"``. Returns the number of subscribers that received it (the
    ``PubSub.publish`` value)."""
    pubsub = _pubsub(qm, "publish_system_event")
    message = PubSubMessage(type=event_type, payload=payload or {}, source="system")
    return await pubsub.publish(SYSTEM_EVENTS, message)


def emit_local_event(
    qm: QueueManager,
    event_type: str,
    payload: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> None:
    """The guide's ``EmitLocalEvent``: ``LocalEventBus.emit`` (non-blocking, any thread)."""
    _event_bus(qm, "emit_local_event").emit(event_type, payload, source)


async def publish_task(
    qm: QueueManager,
    task_type: str,
    priority: Priority | int | str = Priority.NORMAL,
    payload: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> str:
    """The guide's ``PublishTask``: publish a ``Message`` of ``task_type`` on the work queue
    (retries and handler timeout: the queue's defaults). Returns the message id."""
    mq = _message_queue(qm, "publish_task")
    message = Message(type=task_type, priority=priority, payload=payload or {}, source=source)
    return await mq.publish(message)


def schedule_delayed_task(
    qm: QueueManager,
    task_type: str,
    priority: Priority | int | str,
    payload: Mapping[str, Any] | None,
    delay: float | str,
    handler: TaskHandler,
) -> str:
    """The guide's ``ScheduleDelayedTask``: run ``handler(task)`` on the task scheduler
    ``delay`` from now (seconds, or ``"5m"``), with the guide's 60 s timeout per attempt
    and 3 retries. Returns the task id (``scheduler.wait(id)`` waits for its end)."""
    try:
        seconds = parse_duration(delay, number_unit=1.0)
    except ValueError as exc:
        raise ValidationError("delay", delay, str(exc)) from None
    scheduler = _scheduler(qm, "schedule_delayed_task")
    task = Task(
        type=task_type,
        priority=priority,
        payload=payload or {},
        handler=handler,
        timeout=60.0,
        max_retries=3,
        scheduled_at=time.time() + seconds,
    )
    return scheduler.submit_task(task)


async def get_queue_stats(qm: QueueManager) -> dict[str, Any]:
    """The guide's ``GetQueueStats`` / ``qm.GetStats()``: ``await qm.stats()`` (a coroutine:
    the work queue's counts come from the backend)."""
    return await qm.stats()


async def shutdown_queue_system(qm: QueueManager) -> None:
    """The guide's ``ShutdownQueueSystem``: ``await qm.stop()``, logged (idempotent)."""
    log.info("shutting down the queue system")
    await qm.stop()
    log.info("queue system shut down")


class _OwningMessageQueue(MessageQueue):
    """A ``MessageQueue`` that closes the backend built for it when it stops."""

    async def stop(self, grace: float | None = None) -> None:
        try:
            await super().stop(grace)
        finally:
            await self.backend.aclose()


class _OwningPubSub(PubSub):
    """A ``PubSub`` that closes the backend built for it when it stops."""

    async def stop(self, grace: float | None = None) -> None:
        try:
            await super().stop(grace)
        finally:
            await self._backend.aclose()


def message_queue_from(
    config: ConfigSource = None,
    redis: Any = None,
    *,
    registry: BackendRegistry | None = None,
    **overrides: Any,
) -> MessageQueue:
    """A ``MessageQueue`` built the way ``initialize_queue_system`` builds one: from a whole
    config (a path, a mapping, a ``MeetqConfig`` or None) plus ``message_queue`` keys as
    ``overrides``, its backend made by the registry from ``message_queue.type``.

    ``redis`` is an existing ``redis.asyncio.Redis`` client, used as is (and not closed);
    without it a Redis backend connects to ``redis.url``. The backend made here is
    closed by the queue's ``stop()``. The guide's
    ``NewRedisMessageQueue(redisClient, cfg)`` is
    ``message_queue_from({"message_queue": {"type": "redis"}}, redis=client, **cfg)``.
    """
    reg = registry if registry is not None else build_registry()
    cfg = load_config(config, registry=reg)  # the backends' sections, by this registry
    type_name = overrides.get("type", cfg.message_queue.type)
    reg.get(type_name, key="message_queue.type")
    queue = _OwningMessageQueue(
        reg.create(type_name, BackendContext(config=cfg, client=redis)),
        cfg.message_queue,
        **overrides,
    )
    return queue


def pubsub_from(
    config: ConfigSource = None,
    redis: Any = None,
    *,
    registry: BackendRegistry | None = None,
    **overrides: Any,
) -> PubSub:
    """A ``PubSub`` built like ``message_queue_from``, from ``event_bus.type`` and the
    ``event_bus`` keys given as ``overrides``; the guide's
    ``NewRedisPubSubQueue(redisClient)`` is
    ``pubsub_from({"event_bus": {"type": "redis_pubsub"}}, redis=client)``."""
    reg = registry if registry is not None else build_registry()
    cfg = load_config(config, registry=reg)  # the backends' sections, by this registry
    type_name = overrides.get("type", cfg.event_bus.type)
    reg.get(type_name, key="event_bus.type")
    return _OwningPubSub(
        reg.create(type_name, BackendContext(config=cfg, client=redis)),
        cfg.event_bus,
        **overrides,
    )
