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
  set around each handler call, visible in plain handlers' threads too): handlers keep
  their one-argument signature. Reports are coalesced: at most one write per
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
    ResultError,
    TrackingUnsupported,
    ValidationError,
)
from meetq.core.protocols import CAP_TRACKING, Backend, Claimed, LeaseRef, WorkQueueBackend
from meetq.core.serialization import Serializer, decode_message
from meetq.core.tracking import (
    LeaseLabel,
    MessageFacts,
    MessageStatus,
    TrackingWorkQueue,
    decode_record,
    encode_record,
)

__all__ = ["DeliveryContext", "Tracker", "current_delivery"]

log = logging.getLogger("meetq.message_queue")

# result(): how often it reads again while no push came (a lost push, a reconnect).
_RECHECK: Final = 5.0
# Progress reports: at most one backend write per delivery this often.
_PROGRESS_EVERY: Final = 0.25

_CURRENT: contextvars.ContextVar[DeliveryContext] = contextvars.ContextVar("meetq_delivery")


def current_delivery() -> DeliveryContext:
    """The delivery the calling handler runs for (in an ``async`` handler, a plain one's
    thread, or code they call). Outside a handler it raises ``MeetqError``."""
    try:
        return _CURRENT.get()
    except LookupError:
        raise MeetqError(
            "meetq.current_delivery(): not inside a message handler (it is set only while "
            "a MessageQueue runs one)"
        ) from None


class DeliveryContext:
    """One running delivery, as its handler sees it through ``current_delivery()``.

    ``message_id``, ``message_type``, ``attempt`` (1-based) and ``worker`` describe it;
    ``progress(fraction, info)`` reports how far it got, shown by ``status()`` in any
    process. Safe to call from the handler's thread; cheap to call often (coalesced).
    """

    __slots__ = (
        "_last_write",
        "_lease",
        "_loop",
        "_pending",
        "_tracker",
        "_writing",
        "attempt",
        "message_id",
        "message_type",
        "worker",
    )

    def __init__(self, tracker: Tracker | None, claimed: Claimed, worker: str) -> None:
        self._tracker = tracker
        self._lease = LeaseRef(id=claimed.id, type=claimed.type, token=claimed.token)
        self._loop = asyncio.get_running_loop()
        self._pending: bytes | None = None
        self._writing = False
        self._last_write = -math.inf
        self.message_id = claimed.id
        self.message_type = claimed.type
        self.attempt = claimed.attempt
        self.worker = worker

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
        try:
            running = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            running = False
        if running:
            self._offer(data)
        else:
            self._loop.call_soon_threadsafe(self._offer, data)

    def _offer(self, data: bytes) -> None:
        self._pending = data
        if self._writing:
            return  # the write in flight (or waiting out the throttle) takes it next
        self._writing = True
        self._loop.create_task(self._write())

    async def _write(self) -> None:
        assert self._tracker is not None
        try:
            while self._pending is not None:
                wait = self._last_write + _PROGRESS_EVERY - self._loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                data, self._pending = self._pending, None
                self._last_write = self._loop.time()
                try:
                    await self._tracker.queue().report_progress(
                        self._lease, data, self._tracker.status_keep_ms
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
        self.result_keep_ms = int(cfg.result_ttl * 1000)
        self.status_keep_ms = max(int(cfg.status_ttl * 1000), self.result_keep_ms)

    def queue(self, call: str = "status()") -> TrackingWorkQueue:
        if not self.enabled:
            raise TrackingUnsupported(self._backend.name, call)
        return self._queue  # type: ignore[return-value]  # declared by CAP_TRACKING

    # -- what a delivery leaves behind -------------------------------------------------

    def context(self, claimed: Claimed, worker: str) -> contextvars.Token[DeliveryContext]:
        return _CURRENT.set(DeliveryContext(self if self.enabled else None, claimed, worker))

    @staticmethod
    def reset(token: contextvars.Token[DeliveryContext]) -> None:
        _CURRENT.reset(token)

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
        return self._status(message_id, facts)

    def _status(self, message_id: str, facts: MessageFacts) -> MessageStatus:
        record = decode_record(facts.record)
        progress = decode_record(facts.progress)
        fraction = progress.get("fraction")
        shown: dict[str, Any] = {
            "progress": float(fraction) if isinstance(fraction, int | float) else None,
            "progress_info": progress.get("info"),
            "error": facts.error,
        }
        where = facts.where
        if where == "gone":
            state = record.get("state")
            if state not in ("done", "cancelled", "dead"):
                return MessageStatus(id=message_id, state="unknown", **shown)
            shown["error"] = str(record.get("error") or facts.error or "")
            return MessageStatus(
                id=message_id,
                state=state,
                type=str(record.get("type") or ""),
                priority=_int(record.get("priority"), 1),
                attempt=_int(record.get("attempt"), 0),
                published_at=_float(record.get("published_at")),
                started_at=_float(record.get("started_at")),
                finished_at=_float(record.get("finished_at")),
                worker=str(record.get("worker") or ""),
                **shown,
            )
        published = None
        if facts.body is not None:
            try:
                published = decode_message(facts.body, self._serializer, retry_count=0).timestamp
            except (ValueError, KeyError, TypeError, MeetqError):
                published = None  # an undecodable body: the rest still shows
        started, worker = None, ""
        if where == "leased":
            state = "running"
            label = LeaseLabel.parse(facts.token)
            if label is not None:
                started, worker = label.started_ms / 1000.0, label.worker
        elif where == "dead":
            state = "dead"
        elif facts.attempts > 0:
            state = "retrying"
        else:
            state = "waiting" if where == "ready" else "delayed"
        return MessageStatus(
            id=message_id,
            state=state,  # type: ignore[arg-type]
            type=facts.type,
            priority=facts.priority,
            attempt=facts.attempts,
            published_at=published,
            available_at=None if facts.available_ms is None else facts.available_ms / 1000.0,
            started_at=started,
            finished_at=None if facts.dead_at_ms is None else facts.dead_at_ms / 1000.0,
            worker=worker,
            **shown,
        )

    async def cancel(self, message_id: str) -> bool:
        check_name("message_id", message_id)
        queue = self.queue("cancel()")
        before = self._status(message_id, await queue.facts(message_id))
        if before.state in ("unknown", "done", "cancelled", "dead"):
            return False
        record = encode_record(
            {
                "state": "cancelled",
                "finished_at": time.time(),
                "type": before.type,
                "priority": before.priority,
                "attempt": before.attempt,
                "published_at": before.published_at,
                "started_at": before.started_at,
                "worker": before.worker,
                "error": before.error,
            }
        )
        return await queue.cancel(message_id, record, self.status_keep_ms)

    async def result(self, message_id: str, timeout: float | None) -> Any:  # noqa: ASYNC109  (waits without cancelling anything)
        check_name("message_id", message_id)
        limit = None if timeout is None else check_seconds("timeout", timeout)
        queue = self.queue("result()")
        if self.result_keep_ms <= 0:
            raise ResultError(
                message_id,
                "off",
                "results are off on this queue; set message_queue.result_ttl (seconds) "
                "in the workers' config to keep handlers' return values",
            )
        loop = asyncio.get_running_loop()
        deadline = None if limit is None else loop.time() + limit
        async with queue.final_wait(message_id) as wait:
            while True:
                facts = await queue.facts(message_id)
                status = self._status(message_id, facts)
                if status.state == "done":
                    return decode_record(facts.record).get("result")
                if status.state in ("dead", "cancelled", "unknown"):
                    raise ResultError(
                        message_id, status.state, _ended(status), status.error
                    )
                left = _RECHECK if deadline is None else min(_RECHECK, deadline - loop.time())
                if left <= 0:
                    raise ResultError(
                        message_id,
                        status.state,
                        f"not finished within {limit:g}s (it is {status.state})",
                        status.error,
                    )
                await wait(left)


def _ended(status: MessageStatus) -> str:
    if status.state == "dead":
        return f"it failed for good (dead): {status.error or 'no error recorded'}"
    if status.state == "cancelled":
        return "it was cancelled"
    return (
        "no such message: never published, or finished longer ago than "
        "message_queue.result_ttl (or published to another queue)"
    )


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)

