"""A message by id on a ``MessageQueue``: status, result, cancel, progress.

Design (why it looks like this):

- The backend keeps facts (``meetq.core.tracking.TrackingWorkQueue``); everything
  that turns them into a ``MessageStatus`` — which state a stored place means, the
  record format, the error texts, the throttle on progress writes — lives here once,
  for every backend.
- ``status`` is one backend read (two on Redis the first time it meets a type);
  ``cancel`` is a read (to describe what it cancels in the kept record) and one atomic
  write; ``result`` subscribes first, then reads, then waits for the backend's push,
  re-reading every ``_RECHECK`` seconds in case a push was lost (a reconnect).
- Progress goes through a per-delivery context (``current_delivery()``, a contextvar
  set in each delivery's own task, so visible in plain handlers' threads too, and the
  ``DeliveryContext`` made only when a handler asks): handlers keep their one-argument
  signature. Reports are coalesced: at most one write per
  ``_PROGRESS_EVERY`` seconds per delivery, the latest value winning.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from typing import Any, Final

from meetq.core._validation import check_name, check_seconds
from meetq.core.config import MessageQueueConfig
from meetq.core.errors import (
    MeetqError,
    TrackingUnsupported,
    ValidationError,
)
from meetq.core.protocols import CAP_TRACKING, Backend, Claimed, LeaseRef, WorkQueueBackend
from meetq.core.serialization import Serializer
from meetq.core.tracking import (
    LeaseLabel,
    MessageStatus,
    TrackingWorkQueue,
    cancel_record,
    encode_record,
    not_finished,
    result_of,
    results_off,
    status_from_facts,
)

__all__ = ["DeliveryContext", "Tracker", "current_delivery"]

log = logging.getLogger("meetq.message_queue")

# result(): how often it reads again while no push came (a lost push, a reconnect).
_RECHECK: Final = 5.0
# Progress reports: at most one backend write per delivery this often.
_PROGRESS_EVERY: Final = 0.25

# Set in each delivery's own task (whose context ends with it, so it is never reset):
# the tracker and the delivery; the DeliveryContext is made only when a handler asks.
_CURRENT: contextvars.ContextVar[tuple[Tracker, Claimed]] = contextvars.ContextVar(
    "meetq_delivery"
)


def current_delivery() -> DeliveryContext:
    """The delivery the calling handler runs for (in an ``async`` handler, a plain one's
    thread, or code they call). Outside a handler it raises ``MeetqError``."""
    try:
        tracker, claimed = _CURRENT.get()
    except LookupError:
        raise MeetqError(
            "meetq.current_delivery(): not inside a message handler (it is set only while "
            "a MessageQueue runs one)"
        ) from None
    return tracker.delivery(claimed)


class DeliveryContext:
    """One running delivery, as its handler sees it through ``current_delivery()``.

    ``message_id``, ``message_type``, ``attempt`` (1-based) and ``worker`` describe it;
    ``progress(fraction, info)`` reports how far it got, shown by ``status()`` in any
    process. Safe to call from the handler's thread; cheap to call often (coalesced).
    ``cancelled`` is True once ``cancel()`` (any process) stopped this delivery: a
    handler that catches ``CancelledError`` can tell a cancel from a shutdown by it.
    """

    # Made for every delivery: the constructor only stores; what progress() needs is
    # built on its first call.
    __slots__ = (
        "_claimed",
        "_last_write",
        "_lease",
        "_loop",
        "_pending",
        "_tracker",
        "_writing",
        "worker",
    )

    def __init__(self, tracker: Tracker | None, claimed: Claimed, worker: str) -> None:
        self._tracker = tracker
        self._claimed = claimed
        self._lease: LeaseRef | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: bytes | None = None
        self._writing = False
        self._last_write = -math.inf
        self.worker = worker

    @property
    def message_id(self) -> str:
        """The id of the message being handled."""
        return self._claimed.id

    @property
    def message_type(self) -> str:
        """Its type."""
        return self._claimed.type

    @property
    def attempt(self) -> int:
        """Which attempt this is, 1 for the first."""
        return self._claimed.attempt

    def _lease_ref(self) -> LeaseRef:
        if self._lease is None:
            c = self._claimed
            self._lease = LeaseRef(id=c.id, type=c.type, token=c.token)
        return self._lease

    @property
    def cancelled(self) -> bool:
        """True once this delivery was cancelled through ``MessageQueue.cancel``."""
        return self._tracker is not None and self._claimed.token in self._tracker.cancelled

    def progress(self, fraction: float, info: Any = None) -> None:
        """Report ``fraction`` (0.0 to 1.0) done, with ``info`` (JSON-encodable, small).

        Raises ``ValidationError`` for a fraction outside 0..1 or info that JSON cannot
        encode; ``TrackingUnsupported`` on a backend without tracking. The write happens
        in the background: at most one per 0.25 s per delivery, the latest report wins;
        a write that fails is logged, never raised into the handler."""
        if self._tracker is None:
            raise TrackingUnsupported("(unknown)", "progress()")
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise ValidationError("fraction", fraction, "expected a number from 0.0 to 1.0")
        if not 0.0 <= fraction <= 1.0:
            raise ValidationError("fraction", fraction, "expected a number from 0.0 to 1.0")
        try:
            data = encode_record({"fraction": float(fraction), "info": info, "at": time.time()})
        except (TypeError, ValueError) as exc:
            raise ValidationError("info", info, f"cannot be encoded as JSON: {exc}") from None
        loop = self._loop
        if loop is None:  # the first report: made on the loop, or from the handler's thread
            loop = self._loop = self._tracker.loop
            assert loop is not None  # set before any handler runs (Tracker.context)
        try:
            running = asyncio.get_running_loop() is loop
        except RuntimeError:
            running = False
        if running:
            self._offer(data)
        else:
            loop.call_soon_threadsafe(self._offer, data)

    def _offer(self, data: bytes) -> None:
        self._pending = data
        if self._writing:
            return  # the write in flight (or waiting out the throttle) takes it next
        self._writing = True
        assert self._loop is not None
        self._loop.create_task(self._write())

    async def _write(self) -> None:
        assert self._tracker is not None and self._loop is not None
        try:
            while self._pending is not None:
                wait = self._last_write + _PROGRESS_EVERY - self._loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                data, self._pending = self._pending, None
                self._last_write = self._loop.time()
                try:
                    await self._tracker.queue().report_progress(
                        self._lease_ref(), data, self._tracker.status_keep_ms
                    )
                except MeetqError as exc:
                    log.warning(
                        "meetq: %s: could not record progress of %s: %s",
                        self._tracker.name,
                        self.message_id,
                        exc,
                    )
        finally:
            self._writing = False


class Tracker:
    """The tracking half of one ``MessageQueue`` (it owns one)."""

    def __init__(
        self,
        backend: Backend,
        queue: WorkQueueBackend,
        cfg: MessageQueueConfig,
        worker_name: str,
        serializer: Serializer,
    ) -> None:
        self._backend = backend
        self._queue = queue
        self._worker_name = worker_name
        self._serializer = serializer
        self.name = cfg.queue_name
        self.enabled = CAP_TRACKING in backend.capabilities
        # Tokens of this worker's deliveries a cancel stopped, while their task ends.
        self.cancelled: set[str] = set()
        self.loop: asyncio.AbstractEventLoop | None = None  # the consuming loop
        self._contexts: dict[str, DeliveryContext] = {}  # token -> one asked for
        self.result_keep_ms = int(cfg.result_ttl * 1000)
        self.status_keep_ms = max(int(cfg.status_ttl * 1000), self.result_keep_ms)

    def queue(self, call: str = "status()") -> TrackingWorkQueue:
        if not self.enabled:
            raise TrackingUnsupported(self._backend.name, call)
        return self._queue  # type: ignore[return-value]  # declared by CAP_TRACKING

    # -- what a delivery leaves behind -------------------------------------------------

    def enter(self, claimed: Claimed) -> None:
        """In the delivery's own task, before its handler: ``current_delivery()`` finds it.
        The cheapest form (one ``ContextVar.set``): the rest waits for a handler to ask."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        _CURRENT.set((self, claimed))

    def delivery(self, claimed: Claimed) -> DeliveryContext:
        """The one ``DeliveryContext`` of a running delivery, made on first use."""
        found = self._contexts.get(claimed.token)
        if found is None:
            tracker = self if self.enabled else None
            found = self._contexts[claimed.token] = DeliveryContext(
                tracker, claimed, self._worker_name
            )
        return found

    def leave(self, token: str) -> None:
        """The delivery ended: forget what was kept for it."""
        if self._contexts:
            self._contexts.pop(token, None)
        if self.cancelled:
            self.cancelled.discard(token)

    def done_record(self, claimed: Claimed, value: Any, published_at: float) -> bytes:
        """The finished record of an ack (results on): the return value, if JSON can
        encode it, else None and a logged warning."""
        fields: dict[str, Any] = {
            "state": "done",
            "finished_at": time.time(),
            "worker": self._worker_name,
            "type": claimed.type,
            "priority": claimed.priority,
            "attempt": claimed.attempt,
            "published_at": published_at,
            "result": value,
        }
        label = LeaseLabel.parse(claimed.token)
        if label is not None:
            fields["started_at"] = label.started_ms / 1000.0
        try:
            return encode_record(fields)
        except (TypeError, ValueError) as exc:
            log.warning(
                "meetq: %s: result of message %s is not JSON-encodable (%s); kept as None",
                self.name,
                claimed.id,
                exc,
            )
            fields["result"] = None
            fields["result_error"] = f"not JSON-encodable: {exc}"
            return encode_record(fields)

    def failed_record(self, claimed: Claimed, error: str) -> bytes:
        """The finished record of a delivery that failed for good (dead or dropped)."""
        return encode_record(
            {
                "state": "dead",
                "finished_at": time.time(),
                "worker": self._worker_name,
                "type": claimed.type,
                "priority": claimed.priority,
                "attempt": claimed.attempt,
                "error": error,
            }
        )

    # -- the public calls --------------------------------------------------------------

    async def status(self, message_id: str) -> MessageStatus:
        check_name("message_id", message_id)
        facts = await self.queue("status()").facts(message_id)
        return status_from_facts(message_id, facts, self._serializer)

    async def cancel(self, message_id: str) -> bool:
        check_name("message_id", message_id)
        queue = self.queue("cancel()")
        before = status_from_facts(message_id, await queue.facts(message_id), self._serializer)
        record = cancel_record(before)
        if record is None:
            return False
        return await queue.cancel(message_id, record, self.status_keep_ms)

    async def result(self, message_id: str, timeout: float | None) -> Any:  # noqa: ASYNC109  (waits without cancelling anything)
        check_name("message_id", message_id)
        limit = None if timeout is None else check_seconds("timeout", timeout)
        queue = self.queue("result()")
        if self.result_keep_ms <= 0:
            raise results_off(message_id)
        loop = asyncio.get_running_loop()
        deadline = None if limit is None else loop.time() + limit
        async with queue.final_wait(message_id) as wait:
            while True:
                facts = await queue.facts(message_id)
                done, value = result_of(message_id, facts, self._serializer)
                if done:
                    return value
                left = _RECHECK if deadline is None else min(_RECHECK, deadline - loop.time())
                if left <= 0:
                    raise not_finished(message_id, facts, self._serializer, limit)
                await wait(left)

