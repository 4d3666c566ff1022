"""Tracking for the in-memory work queue: ``TrackingWorkQueue`` as a mixin.

The reference for the Redis scripts (``lua/status.lua``, ``cancel.lua``, ``track.lua``,
``progress.lua``): one dict of kept facts per id (last error, progress, finished
record), each with its own expiry, trimmed lazily; waiters are events; a cancel removes
the entry and calls the cancel callbacks, which find the delivery by its token.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs

from meetq.core.protocols import LeaseRef, Settlement
from meetq.core.tracking import CancelCallback, FinalWait, MessageFacts

__all__ = ["MemoryTracking"]


@attrs.define
class _Kept:
    error: str = ""
    progress: bytes = b""
    record: bytes = b""
    expires: float = 0.0  # monotonic seconds


def _wall_ms(monotonic_ms: float) -> int:
    return int(time.time() * 1000 + (monotonic_ms - time.monotonic() * 1000))


class MemoryTracking:
    """The tracking calls; ``MemoryWorkQueue`` supplies the state they read."""

    # Provided by MemoryWorkQueue (its entries are its _Entry records).
    _entries: dict[str, Any]
    _dead: dict[str, Any]
    _processing: int
    _leased: Any  # leases held per type (the concurrency limits count them)
    _counts: Any

    def _tracking_init(self) -> None:
        self._kept: dict[str, _Kept] = {}
        # Objects with set(): an asyncio.Event per result() waiter (a threading.Event
        # for the sync producer's).
        self._final_waiters: dict[str, set[Any]] = {}
        self._cancel_callbacks: list[CancelCallback] = []

    # -- hooks MemoryWorkQueue calls ---------------------------------------------------

    def _track(self, settlement: Settlement) -> None:
        """Before a held lease's settlement applies: keep its record or last error."""
        if settlement.keep_ms <= 0:
            return
        if settlement.record:
            self._keep(settlement.lease.id, settlement.keep_ms, record=settlement.record)
            self._wake_final(settlement.lease.id)
        elif settlement.outcome == "retry" and settlement.error:
            self._keep(settlement.lease.id, settlement.keep_ms, error=settlement.error)

    def _keep(self, message_id: str, keep_ms: int, **fields: Any) -> None:
        now = time.monotonic()
        kept = self._kept.pop(message_id, None)
        if kept is None or kept.expires <= now:
            kept = _Kept()
        for name, value in fields.items():
            setattr(kept, name, value)
        kept.expires = max(kept.expires, now + keep_ms / 1000.0)
        self._kept[message_id] = kept  # to the back: the front expires first (mostly)
        while self._kept:
            first_id, first = next(iter(self._kept.items()))
            if first.expires > now:
                break
            del self._kept[first_id]

    def _kept_of(self, message_id: str) -> _Kept:
        kept = self._kept.get(message_id)
        if kept is None or kept.expires <= time.monotonic():
            return _Kept()
        return kept

    def _wake_final(self, message_id: str) -> None:
        for event in self._final_waiters.get(message_id, ()):
            event.set()

    # -- TrackingWorkQueue -------------------------------------------------------------

    async def facts(self, message_id: str) -> MessageFacts:
        self._check_open()
        kept = self._kept_of(message_id)
        extra: dict[str, Any] = {
            "error": kept.error,
            "progress": kept.progress,
            "record": kept.record,
        }
        dead = self._dead.get(message_id)
        if dead is not None:
            extra["error"] = dead.error
            return MessageFacts(
                where="dead",
                type=dead.type,
                priority=dead.priority,
                attempts=dead.attempts,
                body=dead.body,
                dead_at_ms=int(dead.failed_at * 1000),
                **extra,
            )
        entry = self._entries.get(message_id)
        if entry is None:
            return MessageFacts(where="gone", **extra)
        state = entry.state.value
        where = {"ready": "ready", "delayed": "delayed", "leased": "leased"}[state]
        available = entry.due_at if where == "delayed" else entry.ready_at
        return MessageFacts(
            where=where,  # type: ignore[arg-type]
            type=entry.type,
            priority=entry.priority,
            attempts=entry.attempts,
            body=entry.body,
            token=entry.token if where == "leased" else "",
            available_ms=_wall_ms(available) if available else None,
            **extra,
        )

    async def cancel(self, message_id: str, record: bytes, keep_ms: int) -> bool:
        self._check_open()
        entry = self._entries.get(message_id)
        if entry is None:
            return False
        state = entry.state.value
        lease = LeaseRef(id=entry.id, type=entry.type, token=entry.token)
        if state == "leased":
            self._processing -= 1
            self._leased[entry.type] -= 1
        else:
            self._unwait(entry)
        self._forget(entry)
        self._counts["cancelled"] += 1
        self._keep(message_id, keep_ms, record=record)
        self._wake_final(message_id)
        if state == "leased":
            for callback in list(self._cancel_callbacks):
                callback(lease)
        return True

    async def report_progress(self, lease: LeaseRef, data: bytes, keep_ms: int) -> bool:
        self._check_open()
        if self._holds(lease) is None:
            return False
        self._keep(lease.id, keep_ms, progress=data)
        return True

    @contextlib.asynccontextmanager
    async def final_wait(self, message_id: str) -> AsyncIterator[FinalWait]:
        self._check_open()
        event = asyncio.Event()
        waiters = self._final_waiters.setdefault(message_id, set())
        waiters.add(event)

        async def wait(timeout: float) -> bool:  # noqa: ASYNC109  (the wait's own bound)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await event.wait()
            came = event.is_set()
            event.clear()
            return came

        try:
            yield wait
        finally:
            waiters.discard(event)
            if not waiters:
                self._final_waiters.pop(message_id, None)

    async def on_cancel(self, callback: CancelCallback) -> Callable[[], None]:
        self._check_open()
        self._cancel_callbacks.append(callback)

        def stop() -> None:
            if callback in self._cancel_callbacks:
                self._cancel_callbacks.remove(callback)

        return stop

    # Provided by MemoryWorkQueue.
    def _check_open(self) -> None:
        raise NotImplementedError

    def _forget(self, entry: Any) -> None:
        raise NotImplementedError

    def _unwait(self, entry: Any) -> None:
        raise NotImplementedError

    def _holds(self, lease: LeaseRef) -> Any:
        raise NotImplementedError
