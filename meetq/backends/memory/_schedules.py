"""The memory schedule store: ``ScheduleStore`` beside one ``MemoryWorkQueue``.

Features: named schedules by queue, kept as long as the queue's broker; ``fire`` is a
compare-and-set that stores its message through the queue's own ``enqueue`` (the same
rules, the same wake-ups) in the same step as it moves the next fire time. One event
loop runs everything here and nothing between the check and the writes awaits, so every
MessageQueue attached to the broker may race to fire and exactly one applies each step.
Capability: ``schedules`` (declared by the memory plugin).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

from meetq.core.protocols import StoredMessage, StoredSchedule, WakeCallback

__all__ = ["MemorySchedules"]


class _Queue(Protocol):
    """What it needs of its ``MemoryWorkQueue`` (named so, not imported: no cycle)."""

    def _check_open(self) -> None: ...

    def _store(self, messages: Sequence[StoredMessage]) -> list[str]: ...


class MemorySchedules:
    """The schedules of one memory work queue (shared by every backend on its broker)."""

    def __init__(self, queue: _Queue) -> None:
        self._queue = queue
        self._schedules: dict[str, StoredSchedule] = {}
        self._watchers: list[WakeCallback] = []

    def _changed(self) -> None:
        for callback in list(self._watchers):
            callback()

    async def put(self, schedule: StoredSchedule) -> StoredSchedule:
        self._queue._check_open()
        held = self._schedules.get(schedule.name)
        if held is not None and held.definition == schedule.definition:
            return held
        if held is not None and held.revision == schedule.revision:
            # A new definition always gets a new revision, whatever the caller sent.
            schedule = StoredSchedule(
                name=schedule.name,
                definition=schedule.definition,
                revision=uuid.uuid4().hex,
                next_fire_ms=schedule.next_fire_ms,
            )
        self._schedules[schedule.name] = schedule
        self._changed()
        return schedule

    async def remove(self, name: str) -> bool:
        self._queue._check_open()
        if self._schedules.pop(name, None) is None:
            return False
        self._changed()
        return True

    async def list(self) -> list[StoredSchedule]:
        self._queue._check_open()
        return [self._schedules[name] for name in sorted(self._schedules)]

    async def fire(
        self,
        name: str,
        *,
        revision: str,
        expected_ms: int,
        next_ms: int,
        message: StoredMessage | None,
    ) -> bool:
        self._queue._check_open()
        held = self._schedules.get(name)
        if held is None or held.revision != revision or held.next_fire_ms != expected_ms:
            return False
        if message is not None:
            # The queue's own enqueue, which never suspends: nothing else runs between
            # the check above and the write below.
            self._queue._store([message])
        self._schedules[name] = StoredSchedule(
            name=name, definition=held.definition, revision=revision, next_fire_ms=next_ms
        )
        return True

    async def watch(self, callback: WakeCallback) -> Callable[[], None]:
        self._queue._check_open()
        self._watchers.append(callback)

        def stop() -> None:
            if callback in self._watchers:
                self._watchers.remove(callback)

        return stop
