"""QueueManager: builds every enabled component from one config and runs them together.

Building does not start consuming: register handlers first, then ``await qm.start()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from meetq.broadcast._pubsub import PubSub
from meetq.core._lifecycle import AsyncService, Lifecycle
from meetq.core._validation import check_seconds
from meetq.core.config import MeetqConfig
from meetq.core.errors import ConfigError, MeetqError
from meetq.core.protocols import Backend
from meetq.dispatch._dispatcher import TaskDispatcher
from meetq.inprocess._event_bus import LocalEventBus
from meetq.inprocess._scheduler import TaskScheduler
from meetq.queue._inspection import QueueInfo
from meetq.queue._message_queue import MessageQueue

__all__ = ["SERVICE_STARTED", "SERVICE_STOPPING", "QueueManager"]

log = logging.getLogger("meetq.manager")

#: Local events the manager emits on its event bus (source ``"meetq.manager"``, empty
#: payload): once ``start()`` has started every component (not waited for), and when
#: ``stop()`` begins: that one is waited for, within ``event_bus.shutdown_grace``, before
#: any component stops, so its handlers still find everything running.
SERVICE_STARTED = "service_started"
SERVICE_STOPPING = "service_stopping"
_SOURCE = "meetq.manager"


class QueueManager(AsyncService):
    """Owns the components built from a ``MeetqConfig`` and the backends they use.

    ``get_*`` return None for a component that is disabled.
    """

    def __init__(self, config: MeetqConfig, backend_for: Callable[[str], Backend]) -> None:
        self.config = config
        self._backend_for = backend_for
        self._backends: dict[str, Backend] = {}
        self._message_queue: MessageQueue | None = None
        self._pubsub: PubSub | None = None
        self._event_bus: LocalEventBus | None = None
        self._task_scheduler: TaskScheduler | None = None
        self._task_dispatcher: TaskDispatcher | None = None
        # A stop() that was cancelled midway has not closed everything: the next call
        # carries on (a concurrent one waits for the first instead of returning early).
        self._stop_lock = asyncio.Lock()
        self._stop_done = False
        self._stopping_announced = False
        mq = config.message_queue
        if mq.enabled:
            self._message_queue = MessageQueue(self._backend(mq.type), mq)
        eb = config.event_bus
        if eb.enabled:
            self._pubsub = PubSub(self._backend(eb.type), eb)
            self._event_bus = LocalEventBus.from_config(eb)
        ts = config.task_scheduler
        if ts.enabled:
            # In-process only: it needs no backend, whatever the other sections use.
            self._task_scheduler = TaskScheduler.from_config(ts)
        td = config.task_dispatcher
        if td.enabled:
            if self._message_queue is None:
                raise ConfigError(
                    "task_dispatcher.enabled",
                    True,
                    "the task dispatcher runs on the message queue, which is disabled; "
                    "enable message_queue or set task_dispatcher.enabled: false",
                )
            # Built before anything starts: it registers its result handler on the queue.
            self._task_dispatcher = TaskDispatcher.from_config(
                td, self._message_queue, self._pubsub
            )

    def _backend(self, type_name: str) -> Backend:
        backend = self._backends.get(type_name)
        if backend is None:
            backend = self._backend_for(type_name)
            # Aliases (redis / redis_pubsub) share one backend instance and connection.
            for existing in self._backends.values():
                if existing.name == backend.name:
                    backend = existing
                    break
            self._backends[type_name] = backend
        return backend

    def get_message_queue(self) -> MessageQueue | None:
        """The work queue, or None when ``message_queue.enabled`` is false."""
        return self._message_queue

    def get_pubsub(self) -> PubSub | None:
        """The broadcast component, or None when ``event_bus.enabled`` is false."""
        return self._pubsub

    def get_event_bus(self) -> LocalEventBus | None:
        """The in-process event bus, or None when ``event_bus.enabled`` is false."""
        return self._event_bus

    def get_task_scheduler(self) -> TaskScheduler | None:
        """The in-process task scheduler, or None when ``task_scheduler.enabled`` is false."""
        return self._task_scheduler

    def get_task_dispatcher(self) -> TaskDispatcher | None:
        """The task dispatcher, or None when ``task_dispatcher.enabled`` is false.
        Register routes and ``serve`` handlers before ``start()``."""
        return self._task_dispatcher

    async def _start(self) -> None:
        """Start every built component (``start()``; the rules are ``AsyncService``'s:
        idempotent, ``ClosedError`` after ``stop()``).

        If one fails to start (Redis unreachable, say), the error is raised and ``start()``
        may be called again: components already running stay running, the rest are
        started then.
        """
        if self._event_bus is not None:
            await self._event_bus.start()
        if self._task_scheduler is not None:
            await self._task_scheduler.start()
        if self._pubsub is not None:
            await self._pubsub.start()
        if self._message_queue is not None:
            await self._message_queue.start()
        if self._task_dispatcher is not None:
            await self._task_dispatcher.start()
        if self._event_bus is not None:
            try:
                self._event_bus.emit(SERVICE_STARTED, {}, _SOURCE)
            except MeetqError as exc:  # a full event buffer must not fail start()
                log.warning("meetq: could not emit %r: %s", SERVICE_STARTED, exc)

    async def _announce_stopping(self, bus: LocalEventBus) -> None:
        grace = self.config.event_bus.shutdown_grace
        try:
            await asyncio.wait_for(
                bus.emit_sync(SERVICE_STOPPING, {}, _SOURCE, wait_handled=True), grace
            )
        except TimeoutError:
            log.warning("meetq: %r not handled within %.1fs; stopping", SERVICE_STOPPING, grace)
        except MeetqError as exc:  # a full event buffer must not fail stop()
            log.warning("meetq: could not emit %r: %s", SERVICE_STOPPING, exc)

    async def stop(self, grace: float | None = None) -> None:
        """Stop every component, then close the backends (idempotent).

        Each component gets its own ``shutdown_grace`` (or ``grace`` seconds, for every
        component that has one) plus one bounded backend call (``redis.socket_timeout``).
        Cancelling ``stop()`` raises ``CancelledError``; calling it again then finishes
        what the cancelled call left.
        """
        if grace is not None:
            grace = check_seconds("grace", grace)
        async with self._stop_lock:
            if self._stop_done:
                return
            await self._stop_all(grace)
            self._stop_done = True

    async def _stop_all(self, grace: float | None) -> None:
        bus = self._event_bus
        if bus is not None and bus.lifecycle is Lifecycle.RUNNING and not self._stopping_announced:
            self._stopping_announced = True  # once, even if a cancelled stop() is re-run
            await self._announce_stopping(bus)
        # The dispatcher first: it settles its records while the queue still runs.
        for component in (
            self._task_dispatcher,
            self._task_scheduler,  # its tasks may still publish while it drains
            self._message_queue,
            self._pubsub,
            self._event_bus,
        ):
            if component is None:
                continue
            try:
                if isinstance(component, TaskDispatcher):
                    await component.stop()  # it runs no handlers of its own
                else:
                    await component.stop(grace)
            except Exception:  # one failing component must not keep the others running
                log.exception("meetq: stopping %s failed", type(component).__name__)
        closed: set[int] = set()
        for backend in self._backends.values():
            if id(backend) not in closed:
                closed.add(id(backend))
                await backend.aclose()

    async def inspect(self) -> dict[str, QueueInfo]:
        """Every work queue this manager built, by queue name, each looked at in one
        backend round trip (``MessageQueue.inspect``); empty when ``message_queue`` is
        disabled. Works without ``start()``: it reads, it does not consume."""
        if self._message_queue is None:
            return {}
        return {self._message_queue.name: await self._message_queue.inspect()}

    async def stats(self) -> dict[str, Any]:
        """Statistics of every built component, by component name."""
        result: dict[str, Any] = {}
        if self._message_queue is not None:
            result["message_queue"] = await self._message_queue.stats()
        if self._pubsub is not None:
            result["pubsub"] = await self._pubsub.stats()
        if self._event_bus is not None:
            result["event_bus"] = self._event_bus.stats()
        if self._task_scheduler is not None:
            result["task_scheduler"] = self._task_scheduler.stats()
        if self._task_dispatcher is not None:
            result["task_dispatcher"] = self._task_dispatcher.stats()
        return result
