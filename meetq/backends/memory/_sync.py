"""The memory backend's blocking face (``SyncBackend``), for ``meetq.sync``.

Design (why it looks like this): a memory broker's queues belong to the event loop
that holds them (their wake-ups, waiters and handler tasks run there), so a plain
thread must not touch them. Every call of the sync producer is handed to that loop
with ``asyncio.run_coroutine_threadsafe`` and waited for, within
``memory.sync_call_timeout``; the loop then runs the same ``MemoryWorkQueue`` code an
async publish runs. No lock of ours is needed: the loop's own thread serialises the
calls. The producer attaches a ``MemoryBackend`` of its own to the broker (on that loop),
so the broker and its messages live at least as long as the producer.

Which loop: the running loop holding a broker of the configured ``memory.broker``
name, looked up at the first call (a producer built at import time waits for the app's
loop to start) and again when that loop has stopped. Two running loops holding one
name are refused (which one would be a guess). With no loop holding it — a program
with no async side — the producer starts one of its own on a daemon thread and keeps
the broker there, so publishes, stats and requeues agree with one another; an async
component started later on another loop does not meet that broker (a warning says so).
After ``os.fork`` the child holds no loop of the parent's; it starts its own the same
way. Called from the holding loop's own thread, a call would wait on itself forever:
it is refused, pointing to the async API.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from meetq.backends.memory._backend import MemoryBackend, loops_holding
from meetq.core.errors import BackendUnavailableError, ClosedError, MeetqError
from meetq.core.protocols import (
    Maintenance,
    PubSubTransport,
    QueueSnapshot,
    StoredMessage,
    SyncWorkQueue,
    WorkQueueOptions,
)
from meetq.core.tracking import MessageFacts

__all__ = ["MemorySyncBackend"]

log = logging.getLogger("meetq.memory.sync")

T = TypeVar("T")


class _Attachment:
    """The loop holding the broker, and our backend attached to it there."""

    def __init__(self, loop: asyncio.AbstractEventLoop, backend: MemoryBackend) -> None:
        self.loop = loop
        self.backend = backend
        self.transport: PubSubTransport | None = None
        self.pid = os.getpid()


class MemorySyncBackend:
    """Producer calls on the in-process broker ``broker``, from any thread."""

    name = "memory"

    def __init__(self, *, broker: str, call_timeout: float) -> None:
        self.broker = broker
        self._timeout = call_timeout
        self._lock = threading.Lock()
        self._attached: _Attachment | None = None
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._own_thread: threading.Thread | None = None
        self._closed = False
        self._detaching: asyncio.Task[None] | None = None

    # -- finding the loop ---------------------------------------------------------------

    def _attachment(self) -> _Attachment:
        attached = self._attached
        if attached is not None and attached.pid == os.getpid() and attached.loop.is_running():
            return attached
        with self._lock:
            if self._closed:
                raise ClosedError("this sync producer is closed; create a new one")
            attached = self._attached
            if attached is not None and attached.pid == os.getpid() and attached.loop.is_running():
                return attached
            forked = attached is not None and attached.pid != os.getpid()
            if forked:  # the parent's loops and threads do not exist here
                self._own_loop = self._own_thread = None
            self._attached = None
            loop = self._find_loop(forked)
            backend = self._submit(loop, _attach(self.broker))
            self._attached = _Attachment(loop, backend)
            return self._attached

    def _find_loop(self, forked: bool) -> asyncio.AbstractEventLoop:
        if self._own_loop is not None:
            return self._own_loop
        loops = [] if forked else loops_holding(self.broker)
        if len(loops) > 1:
            raise BackendUnavailableError(
                f"memory: {len(loops)} running event loops hold a broker named "
                f"{self.broker!r} (memory.broker); the sync producer cannot tell which one "
                "to publish to: give the loops' configs different broker names",
                backend="memory",
            )
        if loops:
            return loops[0]
        log.warning(
            "meetq: no running event loop holds memory broker %r; the sync producer keeps "
            "it on a thread of its own. An async component started later on another loop "
            "will not see these messages: start it before the first sync call, or use "
            "type: redis to share queues between processes",
            self.broker,
        )
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name=f"meetq-memory-broker-{self.broker}", daemon=True
        )
        thread.start()
        self._own_loop, self._own_thread = loop, thread
        return loop

    # -- calls ----------------------------------------------------------------------------

    def _submit(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
        if _running_loop() is loop:
            coro.close()
            raise BackendUnavailableError(
                f"memory: a sync producer call from the event loop that holds broker "
                f"{self.broker!r} would wait on itself; from async code await the "
                "MessageQueue / PubSub call instead",
                backend="memory",
            )
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError as exc:  # the loop closed between the check and the call
            coro.close()
            raise BackendUnavailableError(f"memory: {exc}", backend="memory") from exc
        try:
            return future.result(self._timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BackendUnavailableError(
                f"memory: the event loop holding broker {self.broker!r} did not run the "
                f"call within {self._timeout:g}s (memory.sync_call_timeout); it is blocked "
                "or stopping",
                backend="memory",
            ) from None

    def call(self, make: Callable[[MemoryBackend], Coroutine[Any, Any, T]]) -> T:
        """Run ``make(backend)`` on the broker's loop and return its result."""
        attached = self._attachment()

        async def run() -> T:
            return await make(attached.backend)

        return self._submit(attached.loop, run())

    def work_queue(self, queue_name: str, options: WorkQueueOptions) -> SyncWorkQueue:
        return MemorySyncWorkQueue(self, queue_name, options)

    def publish(self, channel: str, data: bytes) -> int:
        attached = self._attachment()

        async def run() -> int:
            # Made on the loop, once per attachment: a transport is that loop's object.
            if attached.transport is None:
                attached.transport = attached.backend.pubsub_transport()
            return await attached.transport.publish(channel, data)

        return self._submit(attached.loop, run())

    def close(self) -> None:
        """Detach from the broker (on its loop) and stop our own loop, if any."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            attached, self._attached = self._attached, None
            own, thread = self._own_loop, self._own_thread
        if attached is not None and attached.pid == os.getpid() and attached.loop.is_running():
            if _running_loop() is attached.loop:
                # Closed from the loop's own thread: detach once this callback returns.
                self._detaching = attached.loop.create_task(attached.backend.aclose())
            else:
                # A loop going away takes the broker with it: nothing to detach from then.
                with contextlib.suppress(BackendUnavailableError):
                    self._submit(attached.loop, attached.backend.aclose())
        if own is not None and thread is not None:
            own.call_soon_threadsafe(own.stop)
            thread.join(self._timeout)
            if not thread.is_alive():
                own.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _attach(broker: str) -> MemoryBackend:
    # Built on the loop: the broker registry is per running loop.
    return MemoryBackend(broker=broker)


class MemorySyncWorkQueue:
    """One queue's producer calls, each run on the broker's loop."""

    def __init__(self, owner: MemorySyncBackend, queue_name: str, options: WorkQueueOptions):
        self.name = queue_name
        self._owner = owner
        self._options = options

    def enqueue(self, messages: Sequence[StoredMessage]) -> list[str]:
        return self._owner.call(lambda b: b.work_queue(self.name, self._options).enqueue(messages))

    def inspect(self) -> QueueSnapshot:
        return self._owner.call(lambda b: b.work_queue(self.name, self._options).inspect())

    def maintain(self, request: Maintenance) -> int:
        return self._owner.call(lambda b: b.work_queue(self.name, self._options).maintain(request))

    # -- tracking (the queue's MemoryTracking, on the broker's loop) --------------------

    def _tracked(self, backend: MemoryBackend) -> Any:
        return backend.work_queue(self.name, self._options)

    def facts(self, message_id: str) -> MessageFacts:
        result: MessageFacts = self._owner.call(lambda b: self._tracked(b).facts(message_id))
        return result

    def cancel(self, message_id: str, record: bytes, keep_ms: int) -> bool:
        result: bool = self._owner.call(
            lambda b: self._tracked(b).cancel(message_id, record, keep_ms)
        )
        return result

    @contextlib.contextmanager
    def final_wait(self, message_id: str) -> Iterator[Callable[[float], bool]]:
        # A threading.Event stands among the queue's waiters: the loop sets it.
        event = threading.Event()

        async def add(backend: MemoryBackend) -> None:
            self._tracked(backend)._final_waiters.setdefault(message_id, set()).add(event)

        async def remove(backend: MemoryBackend) -> None:
            waiters = self._tracked(backend)._final_waiters.get(message_id)
            if waiters is not None:
                waiters.discard(event)

        self._owner.call(add)

        def wait(timeout: float) -> bool:
            came = event.wait(max(0.0, timeout))
            event.clear()
            return came

        try:
            yield wait
        finally:
            with contextlib.suppress(MeetqError):
                self._owner.call(remove)
