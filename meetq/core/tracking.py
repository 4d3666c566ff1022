"""A message by id: the optional tracking capability (``CAP_TRACKING``) and its records.

Design (why it looks like this):

- **Optional, declared.** A backend whose work queue can look a message up by id, cancel
  it wherever it is, and keep a small record after it finished declares
  ``CAP_TRACKING`` and its work-queue objects implement ``TrackingWorkQueue`` besides
  ``WorkQueueBackend``. ``MessageQueue.status/result/cancel`` on a backend without it
  raise ``TrackingUnsupported``; nothing else changes for such a backend.
- **Nothing new on the hot path.** The facts of a running delivery (who holds it and
  since when) travel in the lease token the backend makes anyway (``LeaseLabel``), so a
  claim writes no extra field; the last error of a retry and the finished record of an
  ack are written only when asked for (``Settlement.record``, ``result_ttl``), beside
  the settlement and in its round trip.
- **Core owns the formats.** The finished record and the progress report are JSON that
  core encodes and decodes here; a backend stores them as opaque bytes under the id for
  ``keep_ms`` and tells waiters when a finished record was written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Final, Literal, Protocol, runtime_checkable

import attrs

from meetq.core.errors import MeetqError, ResultError
from meetq.core.protocols import LeaseRef
from meetq.core.serialization import Serializer, decode_message

__all__ = [
    "FINAL_STATES",
    "STATES",
    "CancelCallback",
    "FinalWait",
    "LeaseLabel",
    "MessageFacts",
    "MessageState",
    "MessageStatus",
    "SyncTrackingWorkQueue",
    "TrackingWorkQueue",
    "cancel_record",
    "decode_record",
    "encode_record",
    "not_finished",
    "result_of",
    "results_off",
    "status_from_facts",
]

MessageState = Literal[
    "waiting", "delayed", "running", "retrying", "dead", "done", "cancelled", "unknown"
]
#: Every state ``MessageQueue.status`` reports, in the order a message passes them.
STATES: Final[tuple[str, ...]] = (
    "waiting",
    "delayed",
    "running",
    "retrying",
    "dead",
    "done",
    "cancelled",
    "unknown",
)
#: The states a message does not leave (``result()`` stops waiting at them).
FINAL_STATES: Final = frozenset({"dead", "done", "cancelled"})

# Where a backend found the message (``MessageFacts.where``).
Where = Literal["ready", "delayed", "leased", "dead", "gone"]

#: Called with the lease of a delivery someone cancelled (``TrackingWorkQueue.on_cancel``).
CancelCallback = Callable[[LeaseRef], None]
#: Waits up to its argument (seconds) for a finished record of the id; True if one came.
FinalWait = Callable[[float], Awaitable[bool]]


@attrs.frozen(kw_only=True)
class LeaseLabel:
    """Who holds a delivery and since when, carried inside its lease token.

    A tracking backend builds each token as ``<worker>~<started ms>.<anything>`` (the
    worker's name may hold any character but the token's last ``~`` is the separator),
    so a claim records both without a write of its own; ``parse`` reads them back
    (``None`` for a token of another shape)."""

    worker: str
    started_ms: int

    @staticmethod
    def prefix(worker: str, started_ms: int) -> str:
        return f"{worker}~{started_ms}."

    @classmethod
    def parse(cls, token: str) -> LeaseLabel | None:
        worker, sep, rest = token.rpartition("~")
        if not sep:
            return None
        ms = rest.partition(".")[0]
        if not ms.isdigit():
            return None
        return cls(worker=worker, started_ms=int(ms))


@attrs.frozen(kw_only=True)
class MessageFacts:
    """What a tracking backend knows of one id, in one read (``TrackingWorkQueue.facts``).

    - ``where``: ``ready``, ``delayed`` (held back: a delay or a retry's backoff),
      ``leased``, ``dead`` or ``gone`` (never stored, or finished and removed);
    - ``type``/``priority``/``attempts``: as stored ("" / 1 / 0 when gone);
    - ``body``: the stored body (the dead letter's too), else None;
    - ``token``: the current lease token when leased (``LeaseLabel`` reads it);
    - ``available_ms``: when it became or becomes ready (Unix ms), if known;
    - ``error``: the last error recorded (a retry's or the dead letter's);
    - ``progress``/``record``: the bytes core stored (``encode_record``), else b"";
    - ``dead_at_ms``: when it was dead-lettered.
    """

    where: Where
    type: str = ""
    priority: int = 1
    attempts: int = 0
    body: bytes | None = None
    token: str = ""
    available_ms: int | None = None
    error: str = ""
    progress: bytes = b""
    record: bytes = b""
    dead_at_ms: int | None = None


@attrs.frozen(kw_only=True)
class MessageStatus:
    """One message as ``MessageQueue.status(id)`` sees it, from any process.

    - ``state``: one of ``STATES``. ``waiting``: ready to run; ``delayed``: held back by
      its publish delay; ``running``: leased to a worker; ``retrying``: a failed attempt
      waits for its next one; ``dead``: in the dead-letter queue; ``done`` /
      ``cancelled``: finished, while its record is kept; ``unknown``: never stored, or
      finished and no record kept (``result_ttl`` off for ``done``) or it expired.
    - ``priority`` (0..3), ``attempt``: attempts charged so far (the running one
      included), ``type``;
    - ``published_at`` (the message's own timestamp), ``available_at`` (when it became
      or becomes ready), ``started_at`` (the running attempt's start), ``finished_at``:
      Unix seconds or None;
    - ``worker``: the worker holding it (``MessageQueue.worker_name``), or the one that
      finished it; ``error``: its last error; ``progress`` (0..1) and
      ``progress_info`` as the handler last reported them (``Delivery.progress``).
    """

    id: str
    state: MessageState
    type: str = ""
    priority: int = 1
    attempt: int = 0
    published_at: float | None = None
    available_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    worker: str = ""
    error: str = ""
    progress: float | None = None
    progress_info: Any = None


class SyncTrackingWorkQueue(Protocol):
    """The blocking face of ``TrackingWorkQueue`` for ``meetq.sync`` (same semantics;
    each call bounded as the backend's other sync calls are)."""

    def facts(self, message_id: str) -> MessageFacts: ...

    def cancel(self, message_id: str, record: bytes, keep_ms: int) -> bool: ...

    def final_wait(self, message_id: str) -> AbstractContextManager[Callable[[float], bool]]:
        """As ``TrackingWorkQueue.final_wait``; the wait function blocks the thread."""
        ...


def encode_record(fields: dict[str, Any]) -> bytes:
    """A finished record or progress report as core stores it (compact JSON)."""
    return json.dumps(fields, separators=(",", ":"), allow_nan=False).encode()


def decode_record(data: bytes) -> dict[str, Any]:
    """What ``encode_record`` made; {} for anything else (a key written by hand)."""
    if not data:
        return {}
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def now_ms() -> int:
    return int(time.time() * 1000)


@runtime_checkable
class TrackingWorkQueue(Protocol):
    """What a work queue of a ``CAP_TRACKING`` backend offers beyond ``WorkQueueBackend``.

    Same rules as the base: atomic per call, bounded time, ``ClosedError`` after close.

    - ``exchange(..., worker=name)`` takes the claiming worker's name; every lease
      token it makes (and every one a hand-off makes for that caller) starts with
      ``LeaseLabel.prefix(name, <claim time ms>)``.
    - A settlement with ``record`` non-empty stores it as the message's finished record
      for ``keep_ms`` — only if its lease is still the current one, in the same round
      trip as the settlement, and before it — and wakes ``final_wait`` waiters. A
      ``retry`` settlement with ``keep_ms`` > 0 keeps its ``error`` as the last error.
    """

    async def facts(self, message_id: str) -> MessageFacts:
        """Everything stored of ``message_id`` in one read (``where="gone"``: nothing
        live; a finished record or progress may still be there)."""
        ...

    async def cancel(self, message_id: str, record: bytes, keep_ms: int) -> bool:
        """Remove a waiting, delayed or leased message at once, so it never runs (again)
        and no settlement of its lease applies; count it (``cancelled``); keep
        ``record`` as its finished record for ``keep_ms``; tell its holder (``on_cancel``
        callbacks, in any process) and ``final_wait`` waiters. False (nothing written)
        for an id not stored or dead-lettered."""
        ...

    async def report_progress(self, lease: LeaseRef, data: bytes, keep_ms: int) -> bool:
        """Keep ``data`` as the progress of the delivery ``lease`` for ``keep_ms``, if
        that lease is still the current one; False (nothing written) if not."""
        ...

    def final_wait(self, message_id: str) -> AbstractAsyncContextManager[FinalWait]:
        """A subscription to ``message_id``'s finished record: in force when entered,
        so a caller checks ``facts`` inside it and then awaits the wait function."""
        ...

    async def on_cancel(self, callback: CancelCallback) -> Callable[[], None]:
        """Call ``callback(lease)`` for every delivery cancelled by ``cancel`` (this
        process or another); returns the function that stops the calls."""
        ...


def status_from_facts(
    message_id: str, facts: MessageFacts, serializer: Serializer
) -> MessageStatus:
    """What ``MessageQueue.status`` reports for the facts a backend read."""
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
            published = decode_message(facts.body, serializer, retry_count=0).timestamp
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


def cancel_record(before: MessageStatus) -> bytes | None:
    """The record a cancel keeps, describing what it cancels; None when ``before`` is a
    state a cancel cannot apply to (the backend would refuse it anyway)."""
    if before.state in ("unknown", "done", "cancelled", "dead"):
        return None
    return encode_record(
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


def results_off(message_id: str) -> ResultError:
    return ResultError(
        message_id,
        "off",
        "results are off on this queue; set message_queue.result_ttl (seconds) on the "
        "workers and here to keep handlers' return values",
    )


def result_of(message_id: str, facts: MessageFacts, serializer: Serializer) -> tuple[bool, Any]:
    """(True, the return value) once done; (False, None) while it may still finish;
    ``ResultError`` for a message that ended dead, cancelled, or is unknown."""
    status = status_from_facts(message_id, facts, serializer)
    if status.state == "done":
        return True, decode_record(facts.record).get("result")
    if status.state in ("dead", "cancelled", "unknown"):
        raise ResultError(message_id, status.state, _ended(status), status.error)
    return False, None


def not_finished(
    message_id: str, facts: MessageFacts, serializer: Serializer, limit: float | None
) -> ResultError:
    status = status_from_facts(message_id, facts, serializer)
    return ResultError(
        message_id,
        status.state,
        f"not finished within {limit or 0:g}s (it is {status.state})",
        status.error,
    )


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
