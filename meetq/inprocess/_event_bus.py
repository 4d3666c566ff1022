"""LocalEventBus: in-process events with per-type order, a non-blocking emit and counted overflow.

Design (why it looks like this):

- Events are sharded by type over ``workers`` worker tasks (a stable hash of the type
  picks the worker), and each worker runs its events one after another. So every
  handler sees the events of one type in emit order even with many workers, and no
  task is created per event.
- Each worker owns a ``deque`` and wakes on a future; asyncio is single-threaded, so
  the hot path (``emit``) takes no lock: one append, two counter updates, maybe a wake-up.
- The buffer bound (``buffer_size``) counts every accepted, unfinished event across
  workers; what happens when it is full is the configured ``overflow`` policy and is
  always counted and logged, never silent.
- Other threads (a plain handler's, a WSGI view's) never touch the deques: ``emit``
  there builds the event, reserves room under a lock and hands it to the loop bound by
  ``start()`` with ``call_soon_threadsafe``, which wakes the loop at once and runs the
  callbacks in call order, so one thread's events keep their order. The loop's own
  ``emit`` stays lock-free; only the reservation count is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from meetq.core._build import build_config
from meetq.core._fastattrs import trusted_builder
from meetq.core._lifecycle import AsyncService
from meetq.core._ratelog import LogEvery
from meetq.core._usercode import user_failure, user_runner
from meetq.core._validation import check_key, check_seconds, is_async_callable
from meetq.core.config import EventBusConfig
from meetq.core.errors import ClosedError, QueueFull, ValidationError
from meetq.core.types import LocalEvent, new_id

__all__ = ["EventHandler", "LocalEventBus"]

# Bound once: emit() asks for the calling thread on every event.
_get_ident = threading.get_ident
# Every key's exact type is str: checked in C (no generator frame per key).
_ONLY_STR = frozenset({str})

log = logging.getLogger("meetq.event_bus")

#: A handler receives one ``LocalEvent``; it may be ``async def`` or a plain function.
EventHandler = Callable[[LocalEvent], Any]
_Runner = Callable[[LocalEvent], Awaitable[Any]]

Overflow = Literal["raise", "drop", "wait"]
WILDCARD = "*"
# Events whose values emit() has checked are built directly (core/_fastattrs).
_build_event = trusted_builder(LocalEvent, "type", "payload", "source", "id", "timestamp")


class _Worker:
    """One shard: a FIFO of events and the task that runs their handlers in order."""

    __slots__ = ("queue", "task", "waiter")

    def __init__(self) -> None:
        self.queue: deque[LocalEvent] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None


class LocalEventBus(AsyncService):
    """Dispatches in-process events to handlers registered by event type.

    Contract:

    - ``emit`` never blocks (it is a plain function); ``emit_sync`` waits until the event
      is accepted, or until it was handled when ``wait_handled=True``.
    - Every handler receives the events of one type in emit order, with any number of
      workers. Handlers of one type run one after another (a slow handler delays the
      events of the types on its worker, never the emitter). A ``"*"`` handler receives
      every type; it may run concurrently for events of types on different workers.
    - At most ``buffer_size`` events are accepted and not yet handled. When full,
      ``overflow`` decides: ``raise`` (default) raises ``QueueFull``; ``drop`` discards the
      new event, counts it in ``dropped_events`` and logs (rate-limited); ``wait`` makes
      ``emit_sync`` wait for room (``emit`` cannot wait, so it raises ``QueueFull``).
    - Events may be emitted before ``start()``; they wait in the buffer until it runs.
    - A handler's exception is logged and counted (``failed_events``); the other handlers
      of the event still run. Plain (non-async) handlers run in a thread
      (asyncio's default executor) so they cannot stall the event loop; what a
      handler raises follows ``meetq/core/_usercode.py``.
    - ``stop()`` stops accepting (``emit`` then raises ``ClosedError``), handles what is
      pending within ``shutdown_grace`` seconds, then cancels the rest (counted as dropped
      and logged). It is idempotent.
    """

    def __init__(
        self,
        buffer_size: int | None = None,
        workers: int | None = None,
        *,
        overflow: Overflow | None = None,
        shutdown_grace: float | None = None,
        config: EventBusConfig | Mapping[str, Any] | None = None,
    ) -> None:
        """Settings are ``event_bus`` config keys: ``config`` (an ``EventBusConfig`` or
        a mapping of its keys; default: the defaults) with the arguments given laid
        over it. A bad one raises ``ValidationError`` naming the argument."""
        given = {
            "buffer_size": buffer_size,
            "workers": workers,
            "overflow": overflow,
            "shutdown_grace": shutdown_grace,
        }
        overrides = {key: value for key, value in given.items() if value is not None}
        cfg = self.config = build_config(EventBusConfig, config, overrides, as_arguments=True)
        self._buffer_size = cfg.buffer_size
        self._overflow: Overflow = cfg.overflow  # type: ignore[assignment]  # a checked choice
        self._shutdown_grace = cfg.shutdown_grace
        self._workers = [_Worker() for _ in range(cfg.workers)]
        # type -> tuple of (handler, how to call it); tuples are replaced, never mutated, so a
        # worker iterating one is unaffected by on()/off() during dispatch.
        self._handlers: dict[str, tuple[tuple[EventHandler, _Runner], ...]] = {}
        self._wildcard: tuple[tuple[EventHandler, _Runner], ...] = ()
        # Events whose emitter waits for them to be handled, by id(event).
        self._handled_waiters: dict[int, asyncio.Future[None]] = {}
        self._space_waiters: deque[asyncio.Future[None]] = deque()
        self._pending = 0
        self._total = 0
        self._processed = 0
        self._failed = 0
        self._dropped = 0
        self._drop_log = LogEvery()  # a flood of drops must not flood the log too
        # Set by stop(): resolved when the last pending event has been handled.
        self._idle: asyncio.Future[None] | None = None
        self._known_types: set[str] = set()
        self._id_prefix = new_id()[:16]
        self._id_counter = 0
        # event type -> worker index, so the hot path hashes each type once.
        self._shards: dict[str, int] = {}
        self._started = False
        self._closed = False
        self._stopped = False
        # Bound by start(): emits from any other thread go through the loop (see emit).
        # The lock orders those emitters, the pre-start buffer and the close in stop().
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._thread_lock = threading.Lock()
        self._reserved = 0  # accepted from other threads, not yet pushed on the loop

    @classmethod
    def from_config(cls, config: EventBusConfig) -> LocalEventBus:
        """A bus sized by ``event_bus.buffer_size``/``workers`` with its overflow and grace."""
        return cls(config=config)

    # -- registration -------------------------------------------------------------------

    def on(self, event_type: str, handler: EventHandler) -> None:
        """Call ``handler`` for every event of ``event_type`` (``"*"``: every event).

        Registering the same handler twice for one type has no further effect.
        """
        _check_type("event_type", event_type)
        if not callable(handler):
            raise ValidationError("handler", handler, "expected a callable")
        entry = (handler, user_runner(handler, is_async=is_async_callable(handler)))
        if event_type == WILDCARD:
            if all(h != handler for h, _ in self._wildcard):
                self._wildcard = (*self._wildcard, entry)
            return
        current = self._handlers.get(event_type, ())
        if all(h != handler for h, _ in current):
            self._handlers[event_type] = (*current, entry)

    def off(self, event_type: str, handler: EventHandler | None = None) -> None:
        """Remove ``handler`` from ``event_type``, or every handler of it when None."""
        _check_type("event_type", event_type)
        if event_type == WILDCARD:
            self._wildcard = (
                () if handler is None else tuple(e for e in self._wildcard if e[0] != handler)
            )
            return
        remaining = (
            ()
            if handler is None
            else tuple(e for e in self._handlers.get(event_type, ()) if e[0] != handler)
        )
        if remaining:
            self._handlers[event_type] = remaining
        else:
            self._handlers.pop(event_type, None)

    # -- emitting -----------------------------------------------------------------------

    def emit(
        self, event_type: str, payload: Mapping[str, Any] | None = None, source: str | None = None
    ) -> None:
        """Queue an event without blocking; callable from any thread.

        Raises ``ClosedError`` after ``stop()``, ``ValidationError`` for a bad type or
        payload, and ``QueueFull`` when the buffer is full and ``overflow`` is ``raise``
        or ``wait``; with ``drop`` the event is discarded and counted.

        From a thread other than the loop's, the event is handed to the bus's loop
        (``call_soon_threadsafe``): the emits of one thread keep their order, an accepted
        event counts against ``buffer_size`` at once, and ``stop()`` handles it like any
        other. Before ``start()`` every emit, from any thread, waits in the buffer.
        (The loop's own path takes no lock, so racing other threads for the last slots
        it may overshoot ``buffer_size`` by one event per racing thread.)
        """
        if _get_ident() != self._loop_thread:
            self._emit_elsewhere(event_type, payload, source)
            return
        if self._closed:
            raise ClosedError("the event bus is stopped; emit to a new LocalEventBus")
        if self._pending + self._reserved >= self._buffer_size:
            if self._overflow == "drop":
                self._count_drop(event_type)
                return
            raise QueueFull(
                f"event bus buffer is full ({self._buffer_size} pending); event "
                f"{event_type!r} not accepted",
                capacity=self._buffer_size,
            )
        self._push(self._make_event(event_type, payload, source))

    def _emit_elsewhere(
        self, event_type: str, payload: Mapping[str, Any] | None, source: str | None
    ) -> None:
        # Another thread, or no loop bound yet. The attrs constructor, not _make_event:
        # its id counter and type cache belong to the loop thread.
        event = LocalEvent(type=event_type, payload=payload or {}, source=source)
        with self._thread_lock:
            if self._closed:
                raise ClosedError("the event bus is stopped; emit to a new LocalEventBus")
            loop = self._loop
            if self._pending + self._reserved >= self._buffer_size:
                if self._overflow != "drop":
                    raise QueueFull(
                        f"event bus buffer is full ({self._buffer_size} pending); event "
                        f"{event_type!r} not accepted",
                        capacity=self._buffer_size,
                    )
                if loop is None:
                    self._count_drop(event_type)
                else:  # the counters belong to the loop thread
                    _call_soon_threadsafe(loop, self._count_drop, event_type)
                return
            if loop is None:
                self._push(event)  # not started: no worker runs, the lock orders emitters
                return
            # Scheduled under the lock, so once stop() has closed the bus under it, every
            # reserved event's callback is already queued on the loop (see stop()).
            _call_soon_threadsafe(loop, self._accept_from_thread, event)
            self._reserved += 1

    def _accept_from_thread(self, event: LocalEvent) -> None:
        with self._thread_lock:
            self._reserved -= 1
        if self._workers[0].task is None and self._stopped:
            # Only reachable when stop() finished first on a loop we were not bound to.
            self._dropped += 1
            log.warning("meetq event bus stopped: dropped %r event %s", event.type, event.id)
            return
        self._push(event)

    def emit_blocking(
        self,
        event_type: str,
        payload: Mapping[str, Any] | None = None,
        source: str | None = None,
        *,
        wait_handled: bool = False,
        timeout: float | None = None,
    ) -> bool:
        """``emit_sync`` for a plain thread: block until the event is accepted (or handled,
        with ``wait_handled``), with the same return value and errors.

        Needs the bus started (its loop running in another thread). ``timeout`` bounds
        the wait in seconds (None: no bound); when it passes, ``TimeoutError`` is raised
        and the emit is cancelled if it was still waiting for room. Called on the bus's
        own loop thread it raises ``ValidationError`` (it would block that loop forever):
        ``await emit_sync(...)`` there.
        """
        if timeout is not None:
            timeout = check_seconds("timeout", timeout)
        loop = self._loop
        if loop is None:
            raise ValidationError(
                "emit_blocking",
                event_type,
                "the event bus is not started; start it first, or emit() to buffer the event",
            )
        if threading.get_ident() == self._loop_thread:
            raise ValidationError(
                "emit_blocking",
                event_type,
                "called on the event bus's own loop, which it would block; await emit_sync()",
            )
        coro = self.emit_sync(event_type, payload, source, wait_handled=wait_handled)
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # the loop is closed
            coro.close()
            raise ClosedError(
                "the event bus's loop is closed; emit to a new LocalEventBus"
            ) from None
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    async def emit_sync(
        self,
        event_type: str,
        payload: Mapping[str, Any] | None = None,
        source: str | None = None,
        *,
        wait_handled: bool = False,
    ) -> bool:
        """Queue an event and wait until it is accepted (or handled, if ``wait_handled``).

        A coroutine for the bus's own loop; from another thread use ``emit_blocking``.

        Returns True when the event was accepted, False when ``overflow=drop`` discarded
        it. With ``overflow=wait`` a full buffer makes this wait for room; with ``raise``
        it raises ``QueueFull``. Handler failures are not raised here (they are counted).
        """
        if self._closed:
            raise ClosedError("the event bus is stopped; emit to a new LocalEventBus")
        event = self._make_event(event_type, payload, source)
        while self._pending + self._reserved >= self._buffer_size:
            if self._overflow == "drop":
                self._count_drop(event_type)
                return False
            if self._overflow == "raise":
                raise QueueFull(
                    f"event bus buffer is full ({self._buffer_size} pending); event "
                    f"{event_type!r} not accepted",
                    capacity=self._buffer_size,
                )
            room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._space_waiters.append(room)
            try:
                await room
            except asyncio.CancelledError:
                if room.done() and not room.cancelled():
                    self._wake_space_waiter()  # we were given room we won't use: pass it on
                raise
            if self._closed:
                raise ClosedError("the event bus was stopped while waiting for room")
        done: asyncio.Future[None] | None = None
        if wait_handled:
            done = asyncio.get_running_loop().create_future()
            self._handled_waiters[id(event)] = done
        self._push(event)
        if done is not None:
            await done
        return True

    def _make_event(
        self, event_type: str, payload: Mapping[str, Any] | None, source: str | None
    ) -> LocalEvent:
        # The attrs constructor (validators, converters, uuid4) costs ~4us, more than the
        # rest of the emit-to-handler path together. For the common, plainly valid case
        # build the identical frozen value directly: a type already seen, a dict with str
        # keys, a str or None source. Anything else goes through the real constructor,
        # which raises the usual ValidationError naming the field.
        if payload is None:
            payload = {}
        if (
            type(event_type) is str
            and event_type in self._known_types
            and type(payload) is dict
            and (source is None or type(source) is str)
            and _ONLY_STR.issuperset(map(type, payload))
        ):
            self._id_counter += 1
            # The id is unique within the process by the counter, across processes by
            # the random 64-bit prefix; same 32-hex-digit shape as new_id().
            return _build_event(
                event_type,
                dict(payload),
                source,
                f"{self._id_prefix}{self._id_counter:016x}",
                time.time(),
            )
        event = LocalEvent(type=event_type, payload=payload, source=source)
        self._known_types.add(event_type)
        return event

    def _push(self, event: LocalEvent) -> None:
        index = self._shards.get(event.type)
        if index is None:
            index = self._shards[event.type] = _shard(event.type, len(self._workers))
        worker = self._workers[index]
        worker.queue.append(event)
        self._pending += 1
        self._total += 1
        waiter = worker.waiter
        if waiter is not None:
            worker.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _count_drop(self, event_type: str) -> None:
        self._dropped += 1
        dropped = self._drop_log.tick()
        if dropped:
            log.warning(
                "meetq event bus full (%d pending): dropped %d event(s), latest type %r",
                self._buffer_size,
                dropped,
                event_type,
            )

    # -- running ------------------------------------------------------------------------

    async def _start(self) -> None:
        """Start the worker tasks (``start()``; the rules are ``AsyncService``'s)."""
        self._started = True
        with self._thread_lock:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
        for index, worker in enumerate(self._workers):
            worker.task = asyncio.create_task(
                self._run(worker), name=f"meetq-event-bus-worker-{index}"
            )

    async def _run(self, worker: _Worker) -> None:
        queue = worker.queue
        loop = asyncio.get_running_loop()
        while True:
            while queue:
                event = queue[0]
                # Snapshot: handlers added or removed during dispatch apply to later events.
                handlers = self._handlers.get(event.type, ())
                wildcard = self._wildcard
                failed = False
                for handler, run in handlers + wildcard if wildcard else handlers:
                    try:
                        await run(event)
                    except BaseException as exc:
                        failure = user_failure(exc)  # raises a cancellation of this worker
                        failed = True
                        log.error(
                            "meetq event bus handler %r failed on %r event %s: %s",
                            handler,
                            event.type,
                            event.id,
                            failure.error,
                            exc_info=failure.exc,
                        )
                # Pop only after handling so stop() sees the event as pending until done.
                queue.popleft()
                self._pending -= 1
                if failed:
                    self._failed += 1
                else:
                    self._processed += 1
                if self._handled_waiters:
                    done = self._handled_waiters.pop(id(event), None)
                    if done is not None and not done.done():
                        done.set_result(None)
                if self._space_waiters:
                    self._wake_space_waiter()
                if self._idle is not None and not self._pending and not self._idle.done():
                    self._idle.set_result(None)
            waiter = loop.create_future()
            worker.waiter = waiter
            await waiter

    def _wake_space_waiter(self) -> None:
        """Give one freed slot to the oldest ``emit_sync`` still waiting for room."""
        while self._space_waiters:
            room = self._space_waiters.popleft()
            if not room.done():
                room.set_result(None)
                return

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting events, handle the pending ones within the grace period, stop.

        ``grace`` defaults to ``shutdown_grace``. Idempotent.
        """
        if grace is not None:
            grace = check_seconds("grace", grace)
        if self._stopped:
            return
        self._stopped = True
        with self._thread_lock:
            self._closed = True  # no other thread reserves room after this
        if self._reserved:
            # Their callbacks are queued on this loop (see _emit_elsewhere): one turn of the
            # loop pushes them, so they are pending below and handled within the grace.
            await asyncio.sleep(0)
        grace = self._shutdown_grace if grace is None else grace
        for room in self._space_waiters:
            if not room.done():
                room.set_result(None)  # they re-check and raise ClosedError
        self._space_waiters.clear()
        tasks = [w.task for w in self._workers if w.task is not None]
        if tasks and self._pending:
            idle = self._idle = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle, grace)
            self._idle = None
        if self._pending:
            log.warning(
                "meetq event bus stopped with %d unhandled event(s) after %.1fs grace; "
                "they are dropped",
                self._pending,
                grace,
            )
            self._dropped += self._pending
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for worker in self._workers:
            worker.queue.clear()
            worker.task = None
        self._pending = 0
        for done in self._handled_waiters.values():
            if not done.done():
                done.set_exception(ClosedError("the event bus stopped before handling the event"))
                # The emitter may be gone; mark the exception retrieved to avoid a warning.
                done.exception()
        self._handled_waiters.clear()

    # -- introspection ------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters (the seed's keys): ``total_events`` accepted, ``processed_events``
        handled with no failing handler, ``failed_events`` with at least one failing
        handler, ``dropped_events`` discarded by overflow or stop, ``pending_events``
        accepted and not yet handled, ``buffer_size`` the capacity; plus ``workers``."""
        return {
            "total_events": self._total,
            "processed_events": self._processed,
            "failed_events": self._failed,
            "dropped_events": self._dropped,
            "pending_events": self._pending,
            "buffer_size": self._buffer_size,
            "workers": len(self._workers),
        }

    def handler_count(self, event_type: str) -> int:
        """How many handlers are registered for ``event_type`` (``"*"``: wildcard ones)."""
        check_key("event_type", event_type)
        if event_type == WILDCARD:
            return len(self._wildcard)
        return len(self._handlers.get(event_type, ()))


def _call_soon_threadsafe(
    loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: object
) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop is closed: nothing will ever run the bus again
        raise ClosedError("the event bus's loop is closed; emit to a new LocalEventBus") from None


def _shard(event_type: str, workers: int) -> int:
    # crc32, not hash(): stable across processes and runs, so behaviour is reproducible.
    return zlib.crc32(event_type.encode()) % workers


def _check_type(field: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValidationError(field, value, "expected a non-empty string")
