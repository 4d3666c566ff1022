"""Recurring tasks of one ``TaskScheduler``: ``cron=`` / ``every=``, in this process only.

Design (why it looks like this): a recurring task is a timer, not a stored schedule. Its
fire times come from the same pure function as the queue's schedules
(``meetq.core._schedules.Cadence``: cronsim, zoneinfo zones, cron's DST rules); at
each one a fresh copy of the task (a new id) is submitted like any other task, so
priority, timeout, retry and the buffer limit apply to it unchanged. One
``loop.call_at`` timer per recurring task: nothing polls. Nothing is stored anywhere:
each process that schedules a task runs its own copy of it (use
``MessageQueue.schedule`` for once across processes). A fire time that passes while
the loop is blocked runs once, late; the ones after it are not caught up.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

import attrs

from meetq.core._schedules import Cadence
from meetq.core.errors import MeetqError
from meetq.core.tasks import Task
from meetq.core.types import new_id

__all__ = ["RecurringTasks"]

log = logging.getLogger("meetq.scheduler")


def _now_ms() -> int:
    return math.floor(time.time() * 1000)


class _Recurring:
    __slots__ = ("cadence", "next_ms", "task", "timer")

    def __init__(self, task: Task, cadence: Cadence, next_ms: int) -> None:
        self.task = task
        self.cadence = cadence
        self.next_ms = next_ms
        self.timer: asyncio.TimerHandle | None = None


class RecurringTasks:
    """The recurring tasks of one scheduler; ``submit`` is its ``submit_task``."""

    def __init__(self, submit: Callable[[Task], str]) -> None:
        self._submit = submit
        self._tasks: dict[str, _Recurring] = {}
        self.fired = 0
        self.refused = 0

    def add(self, name: str, task: Task, cadence: Cadence) -> float:
        """Run a copy of ``task`` at each fire time of ``cadence`` (replacing a
        recurring task of that name); return the first fire time, Unix seconds."""
        self.remove(name)
        entry = _Recurring(task, cadence, cadence.next_after(_now_ms()))
        self._tasks[name] = entry
        self._arm(name, entry)
        return entry.next_ms / 1000

    def remove(self, name: str) -> bool:
        entry = self._tasks.pop(name, None)
        if entry is None:
            return False
        if entry.timer is not None:
            entry.timer.cancel()
        return True

    def next_fires(self) -> dict[str, float]:
        """Each recurring task's name -> its next fire time, Unix seconds."""
        return {name: self._tasks[name].next_ms / 1000 for name in sorted(self._tasks)}

    def close(self) -> None:
        for name in list(self._tasks):
            self.remove(name)

    def _arm(self, name: str, entry: _Recurring) -> None:
        loop = asyncio.get_running_loop()
        # Wall clock to loop clock: fire times are wall-clock instants (cron), the timer
        # runs on the loop's monotonic clock; a gap between the readings errs late.
        delay = max(0.0, (entry.next_ms - _now_ms()) / 1000)
        entry.timer = loop.call_at(loop.time() + delay, self._fire, name, entry)

    def _fire(self, name: str, entry: _Recurring) -> None:
        if self._tasks.get(name) is not entry:
            return  # removed or replaced meanwhile
        now = _now_ms()
        if now < entry.next_ms:  # the loop's timer ran early: wait the rest
            self._arm(name, entry)
            return
        try:
            self._submit(attrs.evolve(entry.task, id=new_id(), scheduled_at=None))
            self.fired += 1
        except MeetqError as exc:  # the buffer is full, or the scheduler stopped
            self.refused += 1
            log.warning("meetq scheduler: recurring task %r not submitted: %s", name, exc)
        # The next fire time after now: one missed while the loop was blocked is not
        # caught up (it ran once, just now).
        entry.next_ms = entry.cadence.next_after(max(entry.next_ms, now), entry.next_ms)
        self._arm(name, entry)
