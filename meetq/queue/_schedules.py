"""The schedule side of a ``MessageQueue``: its calls and the fire loop.

Design (why it looks like this): a schedule lives in the backend (``ScheduleStore``), so
every process sees the same ones and a restart loses none. Every started queue that
consumes runs one small *fire loop*: it reads the schedules, sleeps until the earliest
next fire time (woken early when a schedule changes, and re-reading every
``_REFRESH`` seconds in case a wake-up was lost), and for a due one asks the backend to
apply one fire step as a compare-and-set (``ScheduleStore.fire``). Every process
computes the same step from the same stored state (``meetq.core._schedules``), one of
them applies it and the others see it applied, so each fire time publishes exactly once
however many processes run, and a process that dies mid-step leaves it applied or not.
Producer-only queues do not fire: a schedule's message is work, and while nothing
consumes the queue a fire time is missed and follows the schedule's ``misfire``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import attrs

from meetq.core._backoff import Backoff
from meetq.core._ratelog import LogEvery
from meetq.core._schedules import (
    ScheduleDefinition,
    decode_definition,
    encode_definition,
    plan_fire,
)
from meetq.core._validation import check_name
from meetq.core.errors import BackendError, MeetqError
from meetq.core.protocols import (
    CAP_SCHEDULES,
    Backend,
    ScheduleStore,
    StoredMessage,
    StoredSchedule,
    WorkQueueBackend,
)
from meetq.core.types import Message, new_id

__all__ = ["QueueSchedules", "ScheduleInfo"]

log = logging.getLogger("meetq.schedules")

# The fire loop re-reads the schedules at least this often (seconds), in case a change
# wake-up from another process was lost (a reconnect).
_REFRESH = 10.0
_ERROR_BACKOFF = Backoff(0.1, 5.0)


@attrs.frozen(kw_only=True)
class ScheduleInfo:
    """One schedule as stored, with its next fire time (``MessageQueue.schedules()``).

    ``cron`` or ``every`` (seconds) is set; ``timezone`` applies to ``cron``;
    ``next_fire`` is the next fire time in that zone, ``next_fire_time`` the same as Unix
    seconds; ``message`` is what each fire publishes (with a fresh id each time and the
    headers ``meetq-schedule`` and ``meetq-fire-time``). ``error`` is set (and the
    rest empty) for a stored record meetq cannot read.
    """

    name: str
    cron: str | None
    every: float | None
    timezone: str
    misfire: str
    misfire_grace: float | None
    message: Message | None
    next_fire: datetime
    next_fire_time: float
    error: str = ""


def _info(
    stored: StoredSchedule, definition: ScheduleDefinition | None, error: str
) -> ScheduleInfo:
    when = datetime.fromtimestamp(stored.next_fire_ms / 1000, tz=UTC)
    if definition is None:
        return ScheduleInfo(
            name=stored.name,
            cron=None,
            every=None,
            timezone="UTC",
            misfire="",
            misfire_grace=None,
            message=None,
            next_fire=when,
            next_fire_time=stored.next_fire_ms / 1000,
            error=error,
        )
    return ScheduleInfo(
        name=stored.name,
        **definition.summary(),
        message=Message(**definition.message),
        next_fire=when.astimezone(ZoneInfo(definition.cadence.timezone)),
        next_fire_time=stored.next_fire_ms / 1000,
    )


def _now_ms() -> int:
    return math.floor(time.time() * 1000)


class QueueSchedules:
    """A queue's schedules: ``schedule``/``unschedule``/``list`` and the fire loop.

    ``prepare(message)`` validates and encodes a message as the queue's ``publish``
    does. ``store`` is None on a backend without capability ``schedules``: every call
    then raises ``BackendError`` saying so.
    """

    def __init__(
        self,
        backend: Backend,
        queue: WorkQueueBackend,
        queue_name: str,
        prepare: Callable[[Message], StoredMessage],
    ) -> None:
        self._backend_name = backend.name
        self._queue_name = queue_name
        self._prepare = prepare
        make = getattr(queue, "schedule_store", None)
        self._store: ScheduleStore | None = (
            make() if CAP_SCHEDULES in backend.capabilities and make is not None else None
        )
        self._changed = asyncio.Event()
        # Decoded definitions by (name, revision): a stored one never changes.
        self._decoded: dict[tuple[str, str], ScheduleDefinition | str] = {}
        self._reported: set[tuple[str, str]] = set()  # unreadable ones, logged once
        self._fire_errors = LogEvery()
        self.counts = {"schedule_fired": 0, "schedule_skipped": 0, "schedule_races_lost": 0}

    @property
    def supported(self) -> bool:
        return self._store is not None

    def _require(self) -> ScheduleStore:
        if self._store is None:
            raise BackendError(
                f"queue {self._queue_name!r}: backend {self._backend_name!r} does not store "
                f"schedules (it does not declare capability {CAP_SCHEDULES!r}); use a "
                "backend that does (memory, redis) or the in-process TaskScheduler",
                backend=self._backend_name,
            )
        return self._store

    # -- the calls -------------------------------------------------------------------

    async def put(self, definition: ScheduleDefinition) -> ScheduleInfo:
        store = self._require()
        now = _now_ms()
        # The message must publish on this queue as it is: refused now, not at a fire.
        self._prepare(definition.message_for(now))
        stored = await store.put(
            StoredSchedule(
                name=definition.name,
                definition=encode_definition(definition),
                revision=new_id(),
                next_fire_ms=definition.first_fire(now),
            )
        )
        self._changed.set()
        return self._describe(stored)

    async def put_all(self, definitions: Iterable[ScheduleDefinition]) -> None:
        for definition in definitions:
            await self.put(definition)

    async def remove(self, name: str) -> bool:
        check_name("name", name)
        removed = await self._require().remove(name)
        self._changed.set()
        return removed

    async def list(self) -> list[ScheduleInfo]:
        return [self._describe(stored) for stored in await self._require().list()]

    def _definition(self, stored: StoredSchedule) -> ScheduleDefinition | str:
        key = (stored.name, stored.revision)
        found = self._decoded.get(key)
        if found is None:
            try:
                if not stored.revision:
                    raise ValueError(
                        f"unreadable schedule {stored.name!r}: the backend's record of it is "
                        f"corrupt ({stored.definition[:80]!r})"
                    )
                found = decode_definition(stored.name, stored.definition)
            except ValueError as exc:
                found = str(exc)
            if len(self._decoded) > 10_000:
                self._decoded.clear()
            self._decoded[key] = found
        return found

    def _describe(self, stored: StoredSchedule) -> ScheduleInfo:
        found = self._definition(stored)
        if isinstance(found, str):
            return _info(stored, None, found)
        return _info(stored, found, "")

    # -- the fire loop ---------------------------------------------------------------

    async def run(self) -> None:
        """Fire due schedules until cancelled (``MessageQueue`` runs it as a task)."""
        store = self._require()
        stop_watching = await store.watch(self._changed.set)
        failures = 0
        try:
            while True:
                self._changed.clear()
                try:
                    wait = await self._round(store)
                    failures = 0
                except MeetqError as exc:
                    _reraise_cancel(exc)
                    failures += 1
                    wait = _ERROR_BACKOFF.delay(failures)
                    log.warning(
                        "meetq: %s: schedules: backend error, retrying in %.2fs: %s",
                        self._queue_name,
                        wait,
                        exc,
                    )
                _reraise_cancel(None)
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._changed.wait()
        finally:
            stop_watching()

    async def _round(self, store: ScheduleStore) -> float:
        """Apply every due fire step; return how long to sleep (0: read again now)."""
        earliest: int | None = None
        errors = 0
        for stored in await store.list():
            found = self._definition(stored)
            if isinstance(found, str):
                if (stored.name, stored.revision) not in self._reported:
                    self._reported.add((stored.name, stored.revision))
                    log.error("meetq: %s: schedule skipped: %s", self._queue_name, found)
                continue
            try:
                next_ms = await self._fire_due(store, stored, found)
            except MeetqError as exc:
                _reraise_cancel(exc)
                # This schedule's step failed (a corrupt key it writes, a backend error):
                # the others still fire; it is tried again next round.
                if self._fire_errors.tick():
                    log.warning(
                        "meetq: %s: schedule %r could not fire: %s",
                        self._queue_name,
                        stored.name,
                        exc,
                    )
                errors += 1
                continue
            if next_ms is None:
                return 0.0  # another process moved it: read it again
            earliest = next_ms if earliest is None else min(earliest, next_ms)
        wait = _REFRESH if earliest is None else (earliest - _now_ms()) / 1000
        if errors:
            # A failed step is tried again within a second (not at once: it most likely
            # fails until its key is repaired); the other schedules keep their times.
            wait = min(wait, 1.0)
        return min(_REFRESH, max(0.0, wait))

    async def _fire_due(
        self, store: ScheduleStore, stored: StoredSchedule, definition: ScheduleDefinition
    ) -> int | None:
        """Fire ``stored`` while it is due; its next fire time, or None when a step was
        applied by someone else (or the schedule changed) meanwhile."""
        next_ms = stored.next_fire_ms
        while (plan := plan_fire(definition, next_ms, _now_ms())) is not None:
            message: StoredMessage | None = None
            if plan.fire_ms is not None:
                try:
                    message = self._prepare(
                        definition.message_for(plan.fire_ms, misfire=plan.missed)
                    )
                except MeetqError as exc:  # checked at put: a serializer that changed
                    log.error(
                        "meetq: %s: schedule %r: its message cannot be published, "
                        "skipping the fire time: %s",
                        self._queue_name,
                        stored.name,
                        exc,
                    )
            applied = await store.fire(
                stored.name,
                revision=stored.revision,
                expected_ms=next_ms,
                next_ms=plan.next_ms,
                message=message,
            )
            if not applied:
                self.counts["schedule_races_lost"] += 1
                return None
            self.counts["schedule_fired" if message is not None else "schedule_skipped"] += 1
            if plan.missed:
                log.warning(
                    "meetq: %s: schedule %r missed its fire time %s (%s); next at %s",
                    self._queue_name,
                    stored.name,
                    _iso(next_ms),
                    "ran once now" if message is not None else "skipped",
                    _iso(plan.next_ms),
                )
            next_ms = plan.next_ms
        return next_ms


def _reraise_cancel(exc: BaseException | None) -> None:
    """Raise ``CancelledError`` when this task was cancelled and the cancellation did not
    come through: a driver may swallow it mid-call (redis-py on a non-pooled path can
    turn it into a timeout error, ``exc``, or retry the command and return), and the loop
    would then go on and keep ``stop()`` waiting for it forever. ``Task.cancelling()``
    still counts the request."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
