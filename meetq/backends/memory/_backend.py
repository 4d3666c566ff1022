"""The memory backend object, attached to a broker: one Redis per process, in memory.

Design (why it looks like this): two services that share a Redis meet on queue and
channel names. So that a two-service setup moves to ``type: memory`` by config alone,
backends built from configs naming the same ``memory.broker`` (default ``"default"``) in
one event loop attach to one ``_Broker`` — its queues by name and its pub/sub router —
and meet the same way. The broker lives while a backend is attached: closing a backend
closes only what it handed out (each later call on those raises ``ClosedError``); when
the last one closes, the broker's queues and messages are gone, as nothing in memory
outlives its users. ``broker: isolated`` (and ``MemoryBackend()`` built in code) gets a
private broker. Brokers are per event loop because their queues and waiters belong to
one; memory queues are not shared across threads (the sync producer, ``_sync.py``,
hands its calls to the loop that holds the broker).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Any, cast

from meetq.backends.memory._config import ISOLATED
from meetq.core._validation import check_queue_options
from meetq.core.errors import ClosedError
from meetq.core.protocols import (
    CAP_LIMITS,
    CAP_SCHEDULES,
    CAP_TRACKING,
    DeliveryCallback,
    PubSubTransport,
    WakeCallback,
    WorkQueueBackend,
    WorkQueueOptions,
)
from meetq.core.tracking import CancelCallback

__all__ = ["MemoryBackend", "loops_holding"]


class _Broker:
    """Queues by name and one pub/sub router: what one Redis server would hold."""

    def __init__(self) -> None:
        self.queues: dict[str, WorkQueueBackend] = {}
        self.options: dict[str, WorkQueueOptions] = {}
        self.router: Any = None
        self.users = 0

    def work_queue(self, queue_name: str, options: WorkQueueOptions) -> WorkQueueBackend:
        from meetq.backends.memory._work_queue import MemoryWorkQueue

        # The queue's state lives in its object, so one name gives one object to every
        # backend attached. Core checks the options of one backend's openers; the
        # backends of one broker share the object, so they are checked here too.
        check_queue_options(queue_name, self.options.get(queue_name), options)
        queue = self.queues.get(queue_name)
        if queue is None:
            queue = self.queues[queue_name] = MemoryWorkQueue(queue_name, options)
            self.options[queue_name] = options
        return queue

    def transport(self) -> PubSubTransport:
        if self.router is None:
            from meetq.backends.memory._pubsub import MemoryBroker

            self.router = MemoryBroker()
        transport: PubSubTransport = self.router.transport()
        return transport

    async def aclose(self) -> None:
        for queue in self.queues.values():
            await queue.aclose()
        if self.router is not None:
            await self.router.aclose()


# Named brokers, per event loop (dropped with their loop). Changed on each loop's own
# thread; the lock is for the sync producer, which looks for a broker from its threads.
_NAMED_LOCK = threading.Lock()
_NAMED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Broker]] = (
    weakref.WeakKeyDictionary()
)
_NAMED_WITHOUT_LOOP: dict[str, _Broker] = {}


def _named_brokers() -> dict[str, _Broker]:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _NAMED_WITHOUT_LOOP
    brokers = _NAMED.get(loop)
    if brokers is None:
        with _NAMED_LOCK:
            brokers = _NAMED[loop] = {}
    return brokers


def loops_holding(broker: str) -> list[asyncio.AbstractEventLoop]:
    """The running event loops holding a broker named ``broker`` (any thread may ask)."""
    with _NAMED_LOCK:
        held = [loop for loop, brokers in _NAMED.items() if broker in brokers]
    return [loop for loop in held if loop.is_running() and not loop.is_closed()]


class _QueueHandle:
    """One backend's view of a broker's queue: the queue's methods until that backend
    closes, ``ClosedError`` after. The bound methods sit in the instance so a call costs
    nothing extra; closing removes them and ``__getattr__`` then refuses."""

    def __init__(self, queue: WorkQueueBackend) -> None:
        self._queue = queue
        self._closed = False
        self._unlisten: list[Callable[[], None]] = []
        for name in dir(queue):
            if not name.startswith("_"):
                value = getattr(queue, name)
                if callable(value):
                    self.__dict__[name] = value
        self.__dict__["listen"] = self._listen
        self.__dict__["on_cancel"] = self._on_cancel

    async def _listen(
        self, callback: WakeCallback, deliver: DeliveryCallback | None = None
    ) -> Callable[[], None]:
        # Kept, so closing this backend ends its wake-ups on the shared queue too.
        stop = await self._queue.listen(callback, deliver)
        self._unlisten.append(stop)
        return stop

    async def _on_cancel(self, callback: CancelCallback) -> Callable[[], None]:
        stop: Callable[[], None] = await self._queue.on_cancel(callback)  # type: ignore[attr-defined]
        self._unlisten.append(stop)
        return stop

    def __getattr__(self, name: str) -> Any:
        if self._closed and not name.startswith("_"):
            raise ClosedError("the memory backend was closed; build a new one")
        return getattr(self._queue, name)

    def close(self) -> None:
        self._closed = True
        for stop in self._unlisten:
            stop()
        for name in [n for n in self.__dict__ if not n.startswith("_")]:
            del self.__dict__[name]


class MemoryBackend:
    """Queues by name and broadcast, shared by every backend attached to one broker.

    ``broker`` names the broker to attach to (the config's ``memory.broker``); the
    default, ``"isolated"``, is a private one.
    """

    name = "memory"
    capabilities: frozenset[str] = frozenset({CAP_LIMITS, CAP_SCHEDULES, CAP_TRACKING})

    def __init__(self, *, broker: str = ISOLATED) -> None:
        self.broker_name = broker
        if broker == ISOLATED:
            self._broker = _Broker()
        else:
            brokers = _named_brokers()
            found = brokers.get(broker)
            if found is None:
                with _NAMED_LOCK:
                    found = brokers[broker] = _Broker()
            self._broker = found
        self._broker.users += 1
        self._handles: dict[str, _QueueHandle] = {}
        self._transports: list[PubSubTransport] = []
        self._closed = False

    def work_queue(self, queue_name: str, options: WorkQueueOptions) -> WorkQueueBackend:
        self._check_open()
        handle = self._handles.get(queue_name)
        queue = self._broker.work_queue(queue_name, options)
        if handle is None:
            handle = self._handles[queue_name] = _QueueHandle(queue)
        return cast(WorkQueueBackend, handle)

    def pubsub_transport(self) -> PubSubTransport:
        self._check_open()
        transport = self._broker.transport()
        self._transports.append(transport)
        return transport

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the memory backend was closed; build a new one")

    async def aclose(self) -> None:
        """Close every queue and transport made from it: as on every backend, each
        later call on them raises ``ClosedError``. The broker's queues and messages stay
        for the other backends attached; the last one to close drops them. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for handle in self._handles.values():
            handle.close()
        for transport in self._transports:
            await transport.aclose()
        broker = self._broker
        broker.users -= 1
        if broker.users == 0:
            brokers = _named_brokers()
            if brokers.get(self.broker_name) is broker:
                with _NAMED_LOCK:
                    del brokers[self.broker_name]
            await broker.aclose()
