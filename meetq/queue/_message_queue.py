"""MessageQueue: the reliable priority work queue users publish to and consume from.

Everything a user touches lives here once — validation, serialization, the retry
policy, handler timeouts, lease renewal, statistics, logging — on top of a backend's
``WorkQueueBackend`` primitives. That is what keeps ``type: memory`` and ``type: redis``
indistinguishable apart from durability and reach.

The consuming side of one ``MessageQueue`` is a small pool:

- one *exchange loop* settles finished deliveries and claims new ones in a single backend
  round trip, never claiming more than there are free handler slots;
- one task per running handler (``workers`` at most);
- one *lease keeper* that extends every running handler's lease in one call, so a
  handler may run far longer than the visibility timeout without being re-delivered;
- one *janitor* that heartbeats the handled types and dead-letters messages no live
  worker handles after ``unhandled_timeout``.

Wake-ups are a callback the backend calls (``WorkQueueBackend.listen``): it sets the
exchange loop's kick event directly, with no task in between. The loop also wakes every
``poll_interval`` on its own, which covers a wake-up path that is down. A backend may
also hand a message over at enqueue to an idle worker (Redis does): the second
callback starts its handler at once, with no claim round trip, or — when every slot
was taken meanwhile — hands it back uncharged in the next exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from meetq.core._backoff import Backoff
from meetq.core._build import build_config
from meetq.core._lifecycle import AsyncService, Lifecycle
from meetq.core._logfields import message_log_fields
from meetq.core._publishing import (
    check_batch,
    prepare_batch,
    prepare_message,
    queue_options,
    queue_totals,
    requeue_request,
)
from meetq.core._queues import open_work_queue
from meetq.core._ratelog import LogEvery
from meetq.core._schedules import ScheduleDefinition
from meetq.core._tasks import cancel_until_done
from meetq.core._usercode import SyncThreads, Ticket, UserCodeFailed, call_user
from meetq.core._validation import (
    MAX_DEAD_LETTER_BATCH,
    check_count,
    check_key,
    check_name,
    check_seconds,
    is_async_callable,
    plain_str,
)
from meetq.core.config import MessageQueueConfig
from meetq.core.errors import (
    ClosedError,
    ConfigError,
    HandlerTimeout,
    MeetqError,
    ValidationError,
)
from meetq.core.middleware import Delivery, MiddlewareChain
from meetq.core.protocols import (
    CAP_LIMITS,
    Backend,
    Claimed,
    LeaseRef,
    Maintenance,
    Settlement,
    StoredMessage,
    WorkQueueBackend,
)
from meetq.core.serialization import JsonSerializer, Serializer, decode_message
from meetq.core.tracking import MessageStatus
from meetq.core.types import DeadLetter, Message, Priority
from meetq.queue._inspection import QueueInfo
from meetq.queue._schedules import QueueSchedules, ScheduleInfo, _reraise_cancel
from meetq.queue._tracking import Tracker

__all__ = ["MessageQueue"]

log = logging.getLogger("meetq.message_queue")

# How long stop() waits for handlers it cancelled after the grace (their cleanup).
CANCELLED_HANDLER_WAIT = 2.0

Handler = Callable[[Message], Any]
H = TypeVar("H", bound=Handler)


class MessageQueue(AsyncService):
    """A reliable priority work queue on one backend.

    Guarantees (checked by ``meetq.testing.WorkQueueContract`` on every backend):

    - strict priority (CRITICAL > HIGH > NORMAL > LOW), FIFO within a priority;
    - at-least-once: once ``publish`` returns, the message is processed or dead-lettered;
    - the visibility timeout is a lease renewed while the handler runs; only an expired
      lease (a dead or stuck worker) causes re-delivery;
    - a failed attempt is retried after an exponential backoff with jitter, scheduled in
      the backend; after ``max_retries`` retries it is dead-lettered (or dropped and
      counted when the dead-letter queue is disabled);
    - no handler error, timeout or undecodable message ever stops a worker.

    Build it with ``qm.get_message_queue()`` or directly::

        mq = MessageQueue(backend, queue_name="ai_tasks", workers=4, visibility_timeout=30)
    """

    def __init__(
        self,
        backend: Backend,
        config: MessageQueueConfig | Mapping[str, Any] | None = None,
        *,
        serializer: Serializer | None = None,
        worker_name: str | None = None,
        **overrides: Any,
    ) -> None:
        self.config = build_config(MessageQueueConfig, config, overrides)
        cfg = self.config
        self.backend = backend
        self.name = cfg.queue_name
        self.serializer: Serializer = serializer if serializer is not None else JsonSerializer()
        if worker_name:  # "" or None: the default below
            check_name("worker_name", worker_name)
        self.worker_name = worker_name or f"{socket.gethostname()}:{os.getpid()}"
        self._queue: WorkQueueBackend = open_work_queue(
            backend,
            cfg.queue_name,
            queue_options(cfg),
        )
        self._handlers: dict[str, Handler] = {}
        # Set at start(), once the handlers (async or plain) are known: handler_workers().
        self._workers = 0
        self._capacity = 0
        self._retry_backoff = Backoff(
            cfg.retry_backoff_base, cfg.retry_backoff_max, cfg.retry_jitter
        )
        # After a backend error the exchange loop pauses, doubling up to 2 s while it lasts.
        self._error_backoff = Backoff(max(cfg.poll_interval, 0.05), 2.0)
        self._lease_ms = max(1, int(cfg.visibility_timeout * 1000))
        # Running deliveries by lease token (one message may be re-delivered to this very
        # worker after its lease expired, so the id alone does not name a delivery).
        self._running: dict[str, tuple[Claimed, asyncio.Task[None]]] = {}
        self._slots: asyncio.Semaphore | None = None
        # Tokens whose lease this worker lost: counted once, no longer extended.
        self._lost: set[str] = set()
        self._pending: list[Settlement] = []
        self._kick = asyncio.Event()
        # Set while the last claim found nothing ready for the handled types and no
        # handler runs (wait_idle, `meetq worker --burst`); cleared by the next claim.
        self._idle = asyncio.Event()
        self._stop_listening: Callable[[], None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # new / running / stopped is the base's (AsyncService.lifecycle); these two are
        # steps inside stop(): it began (a second call returns), and its last flush.
        self._stop_began = False
        self._draining = False
        self._claiming = False
        self._local: dict[str, int] = {
            "lease_lost": 0,
            "handler_timeouts": 0,
            "undecodable": 0,
            "cancelled_here": 0,
        }
        # Plain handlers run on threads of their own (made at start()): see _usercode.
        self._sync_threads: SyncThreads | None = None
        self._sync_types: frozenset[str] = frozenset()
        self._claim_types: list[str] = []
        self._held_for_threads = False
        # The last exchange asked for more than it got: the backend may hand messages
        # over at enqueue until an exchange claims nothing (stop() sends that one).
        self._maybe_parked = False
        # The backend's word that a ready message waits only for a rate limit's next
        # token, in ms: the idle wait ends then instead of at poll_interval.
        self._retry_after_ms = 0
        self._tickets: dict[str, Ticket] = {}  # lease token -> the thread it will run on
        self._sync_released = 0
        self._threads_taken_log = LogEvery()
        # Middleware (meetq.core.middleware): unused, one tuple test per publish/delivery.
        self._middleware = MiddlewareChain(f"queue {self.name!r}")
        self._deliveries: dict[str, Delivery] = {}  # lease token -> its Delivery, when observed
        # Status, result, cancel and progress by id (_tracking.py; CAP_TRACKING backends).
        self._tracker = Tracker(
            backend, self._queue, cfg, self.worker_name, self.serializer
        )
        self._exchange_extra: dict[str, Any] = (
            {"worker": self.worker_name} if self._tracker.enabled else {}
        )
        self._stop_cancels: Callable[[], None] | None = None
        self._settling: list[Settlement] = []  # the settlements of the exchange on the wire
        # Named schedules stored in the backend, and the fire loop (queue/_schedules.py).
        self._schedules = QueueSchedules(backend, self._queue, self.name, self._prepare_fired)

    # -- handlers ----------------------------------------------------------------------

    def register_handler(self, message_type: str, handler: Handler) -> None:
        """Run ``handler(message)`` for messages of ``message_type``.

        An ``async def`` handler runs on the event loop; a plain function runs in a
        thread. Raising marks the attempt failed. Register before ``start()``.
        """
        check_name("message_type", message_type)  # the rule Message.type is held to
        message_type = plain_str(message_type)  # a TaskType member: kept as its string
        if not callable(handler):
            raise ValidationError("handler", handler, "expected a callable taking a Message")
        if self._lifecycle is not Lifecycle.NEW:
            raise ValidationError(
                "message_type", message_type, "register handlers before start(); this queue runs"
            )
        if message_type in self._handlers:
            raise ValidationError(
                "message_type", message_type, "a handler is already registered for this type"
            )
        self._handlers[message_type] = handler

    def handler(self, message_type: str) -> Callable[[H], H]:
        """Decorator form of ``register_handler``."""

        def decorate(func: H) -> H:
            self.register_handler(message_type, func)
            return func

        return decorate

    @property
    def handled_types(self) -> list[str]:
        """The message types this queue's workers consume."""
        return sorted(self._handlers)

    # -- middleware --------------------------------------------------------------------

    def add_middleware(self, middleware: object) -> None:
        """Run ``middleware``'s hooks around every publish and delivery of this queue
        (``meetq.core.middleware`` documents them; metrics and tracing use this too)."""
        self._middleware.add(middleware)

    # -- publishing --------------------------------------------------------------------

    def _prepare(
        self, message: object, delay: object, not_before: object, field: str
    ) -> StoredMessage:
        return prepare_message(
            message, delay, not_before, field, self.serializer, self.config.max_retries
        )

    async def publish(
        self,
        message: Message,
        *,
        delay: float | None = None,
        not_before: float | None = None,
    ) -> str:
        """Store ``message`` and return its id.

        ``delay`` (seconds) or ``not_before`` (Unix time) hold it back. With a
        ``dedup_key`` set, publishing while an earlier message with that key waits or runs
        returns the earlier id and stores nothing. Bad input raises ``ValidationError``
        naming the field; nothing is stored then.
        """
        if self._middleware.publishing:
            return (await self._publish_observed([message], delay, not_before, single=True))[0]
        stored = self._prepare(message, delay, not_before, "message")
        ids = await self._queue.enqueue([stored])
        return ids[0]

    async def publish_batch(
        self, messages: Sequence[Message], *, delay: float | None = None
    ) -> list[str]:
        """Validate every message, then store them all or none in one round trip."""
        check_batch(messages)
        if self._middleware.publishing and messages:
            return await self._publish_observed(messages, delay, None, single=False)
        stored = prepare_batch(messages, delay, self.serializer, self.config.max_retries)
        if not stored:
            return []
        return await self._queue.enqueue(stored)

    async def _publish_observed(
        self, messages: Sequence[Message], delay: object, not_before: object, *, single: bool
    ) -> list[str]:
        chain = self._middleware
        shown = [
            chain.before_publish(self.name, m) if isinstance(m, Message) else m for m in messages
        ]
        try:
            stored = [
                self._prepare(m, delay, not_before, "message" if single else f"messages[{i}]")
                for i, m in enumerate(shown)
            ]
            ids = await self._queue.enqueue(stored)
        except BaseException as exc:
            for m in shown:
                if isinstance(m, Message):
                    chain.after_publish(self.name, m, None, exc)
            raise
        for m, message_id in zip(shown, ids, strict=True):
            chain.after_publish(self.name, m, message_id, None)
        return ids

    # -- schedules (queue/_schedules.py) ------------------------------------------------

    def _prepare_fired(self, message: Message) -> StoredMessage:
        return self._prepare(message, None, None, "message")

    async def schedule(
        self,
        name: str,
        message: Message,
        *,
        cron: str | None = None,
        every: float | str | None = None,
        timezone: str | None = None,
        misfire: str = "skip",
        misfire_grace: float | str | None = None,
    ) -> ScheduleInfo:
        """Create or replace the schedule ``name``, stored in the backend: ``message``
        is published (a fresh id each time) at every fire time of ``cron`` (in
        ``timezone``, default UTC) or ``every`` seconds (``"30s"``), exactly once
        however many processes run this queue. A fire time found more than
        ``misfire_grace`` late (default: the gap to the next one, at most 60 s) was
        missed: ``misfire="skip"`` publishes nothing for it, ``"run_once"`` one message
        for the run missed. Storing an unchanged schedule again keeps its next fire time.
        Bad input raises ``ValidationError`` naming it; a backend without schedules
        ``BackendError``. See ``docs/schedules.md``."""
        definition = ScheduleDefinition.build(
            name,
            message,
            cron=cron,
            every=every,
            timezone=timezone,
            misfire=misfire,
            misfire_grace=misfire_grace,
        )
        return await self._schedules.put(definition)

    async def unschedule(self, name: str) -> bool:
        """Delete the schedule ``name``; False when there was none."""
        return await self._schedules.remove(name)

    async def schedules(self) -> list[ScheduleInfo]:
        """Every schedule of this queue (of every process), by name, with its next fire
        time."""
        return await self._schedules.list()

    # -- inspection --------------------------------------------------------------------

    async def queue_length(self, priority: Priority | int | str | None = None) -> int:
        """Messages waiting (ready or scheduled), of one priority or in all."""
        if priority is not None:
            priority = Priority.parse(priority)  # bad input fails before the round trip
        lengths = (await self._queue.inspect()).waiting
        if priority is None:
            return sum(lengths.values())
        return lengths.get(int(Priority.parse(priority)), 0)

    async def processing_count(self) -> int:
        """Messages currently leased to a worker (of any process)."""
        return (await self._queue.inspect()).processing

    async def dead_letter_count(self) -> int:
        """Dead letters kept (after the size and age caps)."""
        return (await self._queue.inspect()).dead

    async def inspect(self) -> QueueInfo:
        """Waiting by priority, delayed, running, dead, unhandled, the totals and each
        handled type with its live workers: one backend round trip, queue-wide (every
        process on a shared backend), without consuming. See ``QueueInfo``."""
        snapshot = await self._queue.inspect()
        return QueueInfo.from_snapshot(self.name, self.backend.name, snapshot)

    async def status(self, message_id: str) -> MessageStatus:
        """Where message ``message_id`` is now, from any process: its state (waiting,
        delayed, running, retrying, dead, done, cancelled or unknown), priority,
        attempt, times, the worker holding it, its last error and progress. One read.

        ``done`` (and the worker that finished it) shows while ``result_ttl`` keeps its
        record; ``cancelled`` for ``status_ttl``. Raises ``TrackingUnsupported`` on a
        backend without the ``tracking`` capability."""
        return await self._tracker.status(message_id)

    async def result(self, message_id: str, timeout: float | None = None) -> Any:  # noqa: ASYNC109  (waits without cancelling the message)
        """The return value of the handler that finished ``message_id`` (JSON-decoded),
        waiting up to ``timeout`` seconds (None: no limit) for it to finish.

        Waits by the backend's push, not by polling. Raises ``ResultError`` when results
        are off (``message_queue.result_ttl`` is 0, the default), when the message ended
        dead or cancelled, is unknown (or its record expired), or did not finish in
        time; ``.state`` says which."""
        return await self._tracker.result(message_id, timeout)

    async def cancel(self, message_id: str) -> bool:
        """Cancel ``message_id``: True when it was waiting or delayed (removed; it never
        runs) or running (the worker holding it, in any process, cancels its handler;
        it is not retried). It ends ``cancelled`` and is counted (``stats()``).
        False for an unknown, finished or dead-lettered id. Safe to repeat and to race
        the handler finishing: whichever reaches the backend first decides."""
        return await self._tracker.cancel(message_id)

    async def dead_letter(self, message_id: str) -> DeadLetter | None:
        """The dead letter with id ``message_id``, or None.

        Looks among the ``MAX_DEAD_LETTER_BATCH`` oldest (the backend lists dead letters
        oldest first and has no lookup by id); a newer one is not found."""
        check_key("message_id", message_id)
        for letter in await self.dead_letters(MAX_DEAD_LETTER_BATCH):
            if letter.id == message_id:
                return letter
        return None

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters (at most ``MAX_DEAD_LETTER_BATCH``), oldest first,
        each with its error and attempts.

        Never raises for stored data: a body that cannot be decoded comes back as
        ``raw`` with ``message=None``; a dead-letter record the backend cannot read
        (a Redis key overwritten by hand) comes back with an ``error`` saying so."""
        _check_count("limit", limit)
        result = []
        for record in await self._queue.dead_letters(limit):
            try:
                message: Message | None = decode_message(
                    record.body, self.serializer, retry_count=max(0, record.attempts - 1)
                )
                raw = None
            except (ValueError, KeyError, TypeError, MeetqError):
                message, raw = None, record.body
            result.append(
                DeadLetter(
                    id=record.id,
                    # "" when the backend's record of it was unreadable (its error says so)
                    type=record.type or (message.type if message is not None else ""),
                    message=message,
                    raw=raw,
                    error=record.error,
                    traceback=record.traceback,
                    attempts=record.attempts,
                    failed_at=record.failed_at,
                )
            )
        return result

    async def requeue_dead_letters(
        self, max_count: int = 100, *, message_type: str | None = None
    ) -> int:
        """Put up to ``max_count`` (at most ``MAX_DEAD_LETTER_BATCH``) oldest dead letters
        back in the queue, attempts reset; return how many moved. With ``message_type``,
        only dead letters of that type move.

        A dead letter whose record is unreadable (no type or priority to go back to)
        is left where it is, not lost; ``dead_letters()`` lists it with the reason."""
        return await self._queue.maintain(requeue_request(max_count, message_type))

    async def clear(self, max_count: int | None = None) -> int:
        """Remove every waiting message (running ones finish), or at most ``max_count``
        (at most ``MAX_DEAD_LETTER_BATCH``) of them; return how many."""
        limit = _optional_count(max_count)
        if limit == 0:
            return 0
        return await self._queue.maintain(Maintenance(action="purge_waiting", limit=max(0, limit)))

    async def clear_dead_letters(self, max_count: int | None = None) -> int:
        """Remove every dead letter, or the ``max_count`` oldest (at most
        ``MAX_DEAD_LETTER_BATCH``); return how many."""
        limit = _optional_count(max_count)
        if limit == 0:
            return 0
        return await self._queue.maintain(Maintenance(action="purge_dead", limit=max(0, limit)))

    async def wait_idle(self) -> None:
        """Wait until this queue's workers run no handler and their last claim found
        nothing ready for the handled types (what ``meetq worker --burst`` waits for).

        Delayed messages not yet due, messages of types this queue does not handle and
        messages other processes hold do not count. Returns at once when this queue
        consumes nothing (not started, no handlers). A message published after it
        returned is claimed as usual while the queue keeps running.
        """
        if not self._tasks:
            return
        await self._idle.wait()

    async def stats(self) -> dict[str, Any]:
        """Queue-wide totals (shared by every process on a shared backend) and this
        worker's own figures (``workers``, ``in_flight``, ``lease_lost``, ...). One
        backend round trip."""
        snapshot = await self._queue.inspect()
        return {
            **queue_totals(self.name, self.backend.name, snapshot),
            "workers": self._workers or self._workers_wanted(),
            "in_flight": len(self._running),
            "handled_types": self.handled_types,
            **self._local,
            **self._schedules.counts,
            **self._sync_stats(),
        }

    def _sync_stats(self) -> dict[str, int]:
        threads = self._sync_threads
        return {
            "sync_threads": 0 if threads is None else threads.threads,
            "sync_threads_busy": 0 if threads is None else threads.busy,
            "sync_threads_abandoned": 0 if threads is None else threads.abandoned,
            "sync_released_no_thread": self._sync_released,
        }

    # -- lifecycle ---------------------------------------------------------------------

    def _workers_wanted(self) -> int:
        any_async = any(is_async_callable(h) for h in self._handlers.values())
        return self.config.handler_workers(any_async=any_async)

    def _describe(self) -> str:
        return f"message queue {self.name!r}"

    async def _start(self) -> None:
        """Start consuming the registered types (``start()``; the rules are
        ``AsyncService``'s). Publishing works without it."""
        if self.config.schedules:
            await self._schedules.put_all(self.config.schedules)
        if not self._handlers:
            log.warning("meetq: queue %r started with no handlers; it only publishes", self.name)
            return
        self._check_limits_supported()
        # Prime the wake-up path so a publish right after start() is not missed. If the
        # backend is unreachable this raises and the queue stays startable.
        stop_listening = await self._queue.listen(self._kick.set, self._handed)
        try:
            await self._queue.heartbeat(
                    self.handled_types, self._heartbeat_ttl_ms, self.worker_name
                )
            if self._lifecycle is Lifecycle.STOPPED:
                # stop() ran while this start() waited on the backend: start nothing.
                raise ClosedError(f"{self._describe()} was stopped while starting")
        except BaseException:
            stop_listening()
            raise
        self._stop_listening = stop_listening
        if self._tracker.enabled:
            self._stop_cancels = await self._tracker.queue().on_cancel(self._cancelled)
        self._claiming = True
        self._sync_types = frozenset(
            t for t, h in self._handlers.items() if not is_async_callable(h)
        )
        self._claim_types = self.handled_types
        cfg = self.config
        self._workers = workers = self._workers_wanted()
        self._capacity = cfg.prefetch or workers
        # Handlers run at most `workers` at once; `prefetch` may hold more leased. Without
        # a larger prefetch the claim limit alone bounds them, and no semaphore is needed.
        self._slots = asyncio.Semaphore(workers) if cfg.prefetch > workers else None
        if self._sync_types:
            self._sync_threads = SyncThreads(
                cfg.sync_threads(), f"{self.name}-sync", self._thread_freed
            )
        self._tasks = [
            asyncio.create_task(self._exchange_loop(), name=f"meetq:{self.name}:exchange"),
            asyncio.create_task(self._lease_keeper(), name=f"meetq:{self.name}:leases"),
            asyncio.create_task(self._janitor(), name=f"meetq:{self.name}:janitor"),
        ]
        if cfg.fire_schedules and self._schedules.supported:
            self._tasks.append(
                asyncio.create_task(self._schedules.run(), name=f"meetq:{self.name}:schedules")
            )

    def _check_limits_supported(self) -> None:
        # Limits hold only where the claim happens; a backend that would ignore them
        # must not be consumed from as if it enforced them.
        cfg = self.config
        if CAP_LIMITS in self.backend.capabilities:
            return
        for key in ("rate_limits", "concurrency_limits"):
            value = getattr(cfg, key)
            if value:
                raise ConfigError(
                    f"message_queue.{key}",
                    {t: str(v) for t, v in value.items()},
                    f"backend {self.backend.name!r} does not enforce limits (it does not "
                    f"declare capability {CAP_LIMITS!r}); remove the limits or use a "
                    "backend that does (memory, redis)",
                )

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let running handlers finish within ``grace`` seconds (default
        ``shutdown_grace``); release the rest back to the queue without charging an
        attempt. Calling it again is harmless.

        Returns within ``grace`` plus one backend call: the last flush of settlements
        is tried once, and if the backend fails it (an unresponsive Redis fails it within
        ``redis.socket_timeout``) the unsettled messages are delivered again after their
        lease. Cancelling ``stop()`` cancels what is left and raises ``CancelledError``.
        """
        if grace is not None:
            grace = check_seconds("grace", grace)
        if self._stop_began:
            return
        self._stop_began = True
        if not self._tasks:
            return  # never started consuming: nothing runs
        self._claiming = False
        wait = self.config.shutdown_grace if grace is None else grace
        try:
            running = [task for _, task in self._running.values()]
            if running:
                _, late = await asyncio.wait(running, timeout=wait)
                for task in late:
                    task.cancel()
                if late:
                    # Bounded: a handler that ignores its cancellation is left running;
                    # its message comes back after its lease, as after a crash.
                    _, stuck = await asyncio.wait(late, timeout=CANCELLED_HANDLER_WAIT)
                    if stuck:
                        log.error(
                            "meetq: %s: %d handler(s) still running %.1fs after being "
                            "cancelled on stop; left running, their messages are "
                            "delivered again after their lease",
                            self.name,
                            len(stuck),
                            CANCELLED_HANDLER_WAIT,
                        )
            # Last flush of settlements, then stop the helpers (cancelled again while
            # they run: a driver may swallow one cancellation). A cancellation of
            # stop() itself reaches its caller.
            self._draining = True
            self._kick.set()
            await cancel_until_done(self._tasks, self._tasks[1:])
        except asyncio.CancelledError:
            for task in [*self._tasks, *(task for _, task in self._running.values())]:
                task.cancel()
            raise
        finally:
            if self._stop_listening is not None:
                self._stop_listening()
                self._stop_listening = None
            if self._stop_cancels is not None:
                self._stop_cancels()
                self._stop_cancels = None

    # -- the worker pool ---------------------------------------------------------------

    @property
    def _heartbeat_ttl_ms(self) -> int:
        return int(self._janitor_interval * 3000)

    @property
    def _janitor_interval(self) -> float:
        return max(0.02, min(5.0, self.config.unhandled_timeout / 4))

    def _settle(self, settlement: Settlement) -> None:
        self._pending.append(settlement)
        self._kick.set()

    async def _exchange_loop(self) -> None:
        try:
            await self._exchange_rounds()
        finally:
            if self._sync_threads is not None:
                self._sync_threads.shutdown()

    def _claimable(self, free: int) -> tuple[list[str], int]:
        """The types to claim and how many: no plain-handler work without a free thread."""
        threads = self._sync_threads
        types = self._claim_types
        if threads is None or free <= 0 or threads.free >= free:
            return types, free
        self._held_for_threads = True  # a returning thread kicks the loop (_thread_freed)
        if threads.free <= 0:
            self._log_threads_taken(threads)
        async_types = [t for t in types if t not in self._sync_types]
        if not async_types:
            return types, max(0, threads.free)
        # Mixed: claim freely; a plain-handler message beyond the free threads is
        # released uncharged when it arrives (_start_delivery).
        return (types if threads.free > 0 else async_types), free

    def _thread_freed(self) -> None:
        # Only when a claim was cut short for want of a thread: otherwise the handler's
        # own settlement kicks the loop a moment later anyway.
        if self._held_for_threads:
            self._held_for_threads = False
            self._kick.set()

    def _log_threads_taken(self, threads: SyncThreads) -> None:
        if not self._threads_taken_log.tick():
            return
        log.warning(
            "meetq: %s: all %d sync handler threads are taken (%d by handlers that ran "
            "past their timeout and still run); plain-handler messages wait, uncharged, "
            "until one returns (message_queue.sync_handler_threads)",
            self.name,
            threads.threads,
            threads.abandoned,
        )

    async def _exchange_rounds(self) -> None:
        failures = 0  # backend errors in a row
        while True:
            draining = self._draining
            slots = self._capacity - len(self._running) if self._claiming else 0
            types, free = self._claimable(slots)
            settlements, self._pending = self._pending, []
            self._settling = settlements
            if not settlements and free <= 0 and not (draining and self._maybe_parked):
                if draining:
                    return
                self._kick.clear()
                await self._kick.wait()
                continue
            self._kick.clear()
            # An exchange that claims nothing ends the backend's hand-offs to us; one
            # that fails leaves it unknown.
            self._maybe_parked = self._maybe_parked or free > 0
            try:
                result = await self._queue.exchange(
                    settlements,
                    types=types,
                    claim=max(0, free),
                    lease_ms=self._lease_ms,
                    **self._exchange_extra,
                )
            except Exception as exc:  # a MeetqError, or a backend's own bug: retried alike
                _reraise_cancel(exc)  # stop() cancelled us and the driver swallowed it
                self._pending[:0] = settlements  # keep them; they are retried next round
                if draining or self._draining:
                    # stop() waits, and the backend has just failed within its bound: one
                    # more try would most likely fail too. The leases expire; nothing is lost.
                    log.error(
                        "meetq: %s: could not settle %d deliveries on stop: %s",
                        self.name,
                        len(settlements),
                        exc,
                    )
                    return
                failures += 1
                backoff = self._error_backoff.delay(failures)
                log.warning(
                    "meetq: %s: backend error, retrying in %.2fs: %s",
                    self.name,
                    backoff,
                    exc,
                    exc_info=_unexpected(exc),
                )
                await self._back_off(backoff)
                continue
            failures = 0
            self._maybe_parked = free > 0 and len(result.claimed) < free
            self._retry_after_ms = result.retry_after_ms
            for settlement, ok in zip(settlements, result.settled, strict=True):
                if ok:
                    self._lost.discard(settlement.lease.token)
                elif settlement.lease.token in self._lost:
                    self._lost.discard(settlement.lease.token)  # counted when it was lost
                else:
                    self._local["lease_lost"] += 1
                    log.warning(
                        "meetq: %s: message %s was re-delivered after its lease expired; "
                        "this worker's %s was not applied",
                        self.name,
                        settlement.lease.id,
                        settlement.outcome,
                        extra=self._log_fields(settlement.lease, None),
                    )
            if result.claimed:
                self._idle.clear()
            for claimed in result.claimed:
                if not self._claiming:
                    # stop() began while this exchange was on the wire: hand these back
                    # (uncharged) instead of starting handlers stop() no longer waits for.
                    lease = LeaseRef(id=claimed.id, type=claimed.type, token=claimed.token)
                    self._pending.append(Settlement(lease=lease, outcome="release"))
                    continue
                self._start_delivery(claimed)
            if draining or not self._claiming:
                continue
            if free > 0 and len(result.claimed) < free and not self._pending:
                # Nothing more for us right now: sleep until a publish wakes us, a
                # handler finishes, or poll_interval passes as a fallback.
                if not self._running:
                    self._idle.set()
                await self._wait_for_work_or_kick()

    def _handed(self, claimed: Claimed) -> bool:
        """A delivery the backend handed over at enqueue: run it now if a slot is free,
        else refuse it and the backend releases it uncharged (a claim took the slot)."""
        if (
            not self._claiming
            or claimed.type not in self._handlers
            or claimed.token in self._running
            or len(self._running) >= self._capacity
        ):
            return False
        self._start_delivery(claimed)
        if self._pending:  # released at once for want of a thread: settle it soon
            self._kick.set()
        return True

    def _start_delivery(self, claimed: Claimed) -> None:
        if claimed.type in self._sync_types:
            assert self._sync_threads is not None
            ticket = self._sync_threads.reserve()
            if ticket is None:
                # It never ran: hand it back without charging an attempt.
                self._sync_released += 1
                self._log_threads_taken(self._sync_threads)
                lease = LeaseRef(id=claimed.id, type=claimed.type, token=claimed.token)
                self._pending.append(Settlement(lease=lease, outcome="release"))
                return
            self._tickets[claimed.token] = ticket
        task = asyncio.create_task(self._run(claimed))
        self._running[claimed.token] = (claimed, task)

    async def _back_off(self, seconds: float) -> None:
        """Sleep ``seconds`` after a backend error, but not past the start of stop()'s
        last flush (it kicks): stop() must not wait out a backoff."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self._draining and (left := deadline - loop.time()) > 0:
            # Clearing loses nothing: the next round looks at everything pending anyway.
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._kick.wait()

    async def _wait_for_work_or_kick(self) -> None:
        # The backend's wake-up callback kicks, so does a handler finishing; the timer is
        # the fallback for a wake-up path that is down (or a delayed message coming due),
        # cut short when the backend said when a rate limit's next token comes.
        if self._kick.is_set():
            return
        wait = self.config.poll_interval
        if self._retry_after_ms:
            wait = min(wait, self._retry_after_ms / 1000.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._kick.wait()

    def _log_fields(self, ref: Claimed | LeaseRef, attempt: int | None) -> dict[str, Any]:
        return message_log_fields(self.name, self.worker_name, ref.id, ref.type, attempt)

    def _max_attempts(self, message: Message) -> int:
        retries = self.config.max_retries if message.max_retries is None else message.max_retries
        return retries + 1

    def _retry_delay_ms(self, attempt: int) -> int:
        return int(self._retry_backoff.delay(attempt) * 1000)

    def _failure(
        self,
        claimed: Claimed,
        message: Message | None,
        error: str,
        tb: str,
        *,
        retry: bool = False,
    ) -> Settlement:
        """Retry while attempts remain, else dead-letter (or drop). Without a message
        (it could not be read), ``retry`` asks for the queue's default limit."""
        lease = LeaseRef(id=claimed.id, type=claimed.type, token=claimed.token)
        limit = (
            self._max_attempts(message)
            if message is not None
            else (self.config.max_retries + 1 if retry else 0)
        )
        tracker = self._tracker
        if claimed.attempt < limit:
            return Settlement(
                lease=lease,
                outcome="retry",
                delay_ms=self._retry_delay_ms(claimed.attempt),
                error=error,
                keep_ms=tracker.status_keep_ms if tracker.enabled else 0,
            )
        # Results on: the final failure is a finished record too (result() waiters wake).
        record = b""
        if tracker.enabled and tracker.result_keep_ms > 0:
            record = tracker.failed_record(claimed, error)
        keep = tracker.result_keep_ms if record else 0
        if self.config.enable_dead_letter_queue:
            return Settlement(
                lease=lease, outcome="dead", error=error, traceback=tb, record=record, keep_ms=keep
            )
        log.error(
            "meetq: %s: dropping message %s (%s) after %d attempts (dead-letter queue "
            "disabled): %s",
            self.name,
            claimed.id,
            claimed.type,
            claimed.attempt,
            error,
            extra=self._log_fields(claimed, claimed.attempt),
        )
        return Settlement(
            lease=lease, outcome="drop", error=error, traceback=tb, record=record, keep_ms=keep
        )

    async def _run(self, claimed: Claimed) -> None:
        lease = LeaseRef(id=claimed.id, type=claimed.type, token=claimed.token)
        # Whatever happens below, this delivery is settled and its slot freed: a task that
        # ended without settling would leave the exchange loop waiting forever.
        settlement = Settlement(lease=lease, outcome="release")
        try:
            if self._slots is None:
                settlement = await self._attempt(claimed, lease)
            else:
                async with self._slots:
                    settlement = await self._attempt(claimed, lease)
        except asyncio.CancelledError:
            # Only stop() cancels a delivery task: hand it back, attempt not charged.
            settlement = Settlement(lease=lease, outcome="release")
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a bug of ours; the message is retried, not lost
            log.exception(
                "meetq: %s: delivery of message %s failed",
                self.name,
                claimed.id,
                extra=self._log_fields(claimed, claimed.attempt),
            )
            settlement = self._failure(claimed, None, f"internal error: {exc!r}", "", retry=True)
        finally:
            self._running.pop(claimed.token, None)
            self._tracker.leave(claimed.token)
            ticket = self._tickets.pop(claimed.token, None)
            if ticket is not None:
                ticket.close()  # not used (undecodable, say): the thread is free again
            if self._deliveries:
                delivery = self._deliveries.pop(claimed.token, None)
                if delivery is not None:
                    self._middleware.after_process(delivery, settlement.outcome, settlement.error)
            self._settle(settlement)

    async def _attempt(self, claimed: Claimed, lease: LeaseRef) -> Settlement:
        try:
            message = decode_message(claimed.body, self.serializer, retry_count=claimed.attempt - 1)
        except (ValueError, KeyError, TypeError, MeetqError) as exc:
            self._local["undecodable"] += 1
            log.error(
                "meetq: %s: message %s cannot be decoded, dead-lettering it raw: %s",
                self.name,
                claimed.id,
                exc,
                extra=self._log_fields(claimed, claimed.attempt),
            )
            return Settlement(
                lease=lease,
                outcome="dead",
                error=f"undecodable message: {exc!r}",
                traceback="".join(traceback.format_exception(exc)),
            )
        if claimed.attempt > self._max_attempts(message):
            # Its lease expired on every try: a worker died or hung each time.
            error = (
                f"lease expired {claimed.attempt - 1} times; the handler never finished "
                f"(max_retries={self._max_attempts(message) - 1})"
            )
            return self._failure(claimed, None, error, "")
        handler = self._handlers.get(claimed.type)
        if handler is None:  # cannot happen: we claim only handled types
            return Settlement(lease=lease, outcome="release")
        timeout = message.timeout or self.config.handler_timeout or None
        # A plain handler runs on the thread reserved for it (its timeout counts from its
        # start there); an async one on the loop.
        ticket = self._tickets.pop(claimed.token, None)
        if self._middleware.processing:
            delivery = Delivery(self.name, self.worker_name, message, claimed.attempt)
            self._deliveries[claimed.token] = delivery  # _run settles it with the outcome
            self._middleware.before_process(delivery)
        tracker = self._tracker
        tracker.enter(claimed)  # current_delivery(), in this delivery's own task
        try:
            value = await call_user(
                handler, message, is_async=ticket is None, timeout=timeout, ticket=ticket
            )
        except UserCodeFailed as failure:
            if failure.timeout is not None:
                return self._timed_out(claimed, message, failure.timeout)
            return self._handler_failed(claimed, message, failure)
        if tracker.result_keep_ms > 0 and tracker.enabled:
            return Settlement(
                lease=lease,
                outcome="ack",
                record=tracker.done_record(claimed, value, message.timestamp),
                keep_ms=tracker.result_keep_ms,
            )
        return Settlement(lease=lease, outcome="ack")

    def _cancelled(self, lease: LeaseRef) -> None:
        """Someone cancelled a delivery (``cancel()``, any process): stop its handler if
        it runs here. The backend has already removed the message, so its settlement
        will be refused; the token goes to ``_lost`` so that is not counted again."""
        running = self._running.get(lease.token)
        if running is None:
            # Finished here just before the cancel won: its settlement, waiting or on
            # the wire, will be refused; that is the cancel, not a lost lease.
            if any(s.lease.token == lease.token for s in (*self._pending, *self._settling)):
                self._lost.add(lease.token)
            return
        self._lost.add(lease.token)
        self._local["cancelled_here"] += 1
        self._tracker.cancelled.add(lease.token)
        running[1].cancel()

    def _timed_out(self, claimed: Claimed, message: Message, timeout: float | None) -> Settlement:
        assert timeout is not None
        self._local["handler_timeouts"] += 1
        error = str(HandlerTimeout(timeout))
        log.warning(
            "meetq: %s: message %s attempt %d: %s",
            self.name,
            claimed.id,
            claimed.attempt,
            error,
            extra=self._log_fields(claimed, claimed.attempt),
        )
        return self._failure(claimed, message, error, "")

    def _handler_failed(
        self, claimed: Claimed, message: Message, failure: UserCodeFailed
    ) -> Settlement:
        log.warning(
            "meetq: %s: message %s (%s) attempt %d failed: %s",
            self.name,
            claimed.id,
            claimed.type,
            claimed.attempt,
            failure.error,
            extra=self._log_fields(claimed, claimed.attempt),
        )
        return self._failure(claimed, message, failure.error, failure.format_traceback())

    async def _lease_keeper(self) -> None:
        interval = self._lease_ms / 3000.0
        while True:
            _reraise_cancel(None)
            await asyncio.sleep(interval)
            leases = [
                LeaseRef(id=c.id, type=c.type, token=c.token)
                for c, _ in self._running.values()
                if c.token not in self._lost
            ]
            if not leases:
                continue
            try:
                held = await self._queue.extend(leases, self._lease_ms)
            except Exception as exc:
                _reraise_cancel(exc)
                log.warning(
                    "meetq: %s: could not renew %d leases: %s",
                    self.name,
                    len(leases),
                    exc,
                    exc_info=_unexpected(exc),
                )
                continue
            for lease, ok in zip(leases, held, strict=True):
                if not ok and lease.token not in self._lost:
                    self._lost.add(lease.token)
                    self._local["lease_lost"] += 1
                    log.warning(
                        "meetq: %s: lease of message %s was lost while it ran",
                        self.name,
                        lease.id,
                        extra=self._log_fields(lease, None),
                    )

    async def _janitor(self) -> None:
        interval = self._janitor_interval
        timeout_ms = int(self.config.unhandled_timeout * 1000)
        sweep = Maintenance(
            action="sweep_unhandled",
            limit=1000,
            unhandled_timeout_ms=timeout_ms,
            reason=unhandled_reason(timeout_ms),
        )
        while True:
            _reraise_cancel(None)
            await asyncio.sleep(interval)
            try:
                await self._queue.heartbeat(
                    self.handled_types, self._heartbeat_ttl_ms, self.worker_name
                )
                swept = await self._queue.maintain(sweep)
            except Exception as exc:
                _reraise_cancel(exc)
                log.warning(
                    "meetq: %s: heartbeat failed: %s", self.name, exc, exc_info=_unexpected(exc)
                )
                continue
            if swept:
                log.error(
                    "meetq: %s: dead-lettered %d messages no live worker handles", self.name, swept
                )


def _unexpected(exc: Exception) -> bool:
    """A backend error that is no ``MeetqError``: a bug of the backend (or of its driver)
    that it failed to translate. The loops retry it like any backend error, so a worker
    rides it out, and log its traceback, so it can be fixed."""
    return not isinstance(exc, MeetqError)


def unhandled_reason(timeout_ms: int) -> str:
    """The error of a message dead-lettered for want of a handler, as a template whose
    ``{type}`` the backend fills in (``Maintenance.reason``)."""
    return f"no live worker handles type {{type!r}} (waited {timeout_ms / 1000:g}s)"


def _check_count(field: str, value: object) -> None:
    check_count(field, value, MAX_DEAD_LETTER_BATCH)


def _optional_count(max_count: object) -> int:
    """A purge's ``max_count`` checked: -1 for None ("all of them", ``Maintenance.limit``
    0), else the count (0 removes nothing and needs no round trip)."""
    if max_count is None:
        return -1
    return check_count("max_count", max_count, MAX_DEAD_LETTER_BATCH)
