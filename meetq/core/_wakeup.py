"""A wake-up signal that several waiting tasks each see, for ``wait_for_work``.

One shared ``asyncio.Event`` loses wake-ups when several workers of one process share a
queue: the first to wake clears it, and a worker that was busy in that moment sleeps
until its poll interval although work is ready. Here every waiting task has an event of
its own, and ``set`` sets them all. Callers wait from one long-lived task each (the
MessageQueue's watcher), so the per-task event keeps a wake-up until it is consumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref

__all__ = ["WakeSignal"]


class WakeSignal:
    """``set()`` wakes every task that waits, or will next wait, in ``wait()``.

    A task seen for the first time inherits the wake-up nobody has consumed yet, so a
    caller waiting from a fresh task each time still behaves like one shared event.
    """

    def __init__(self) -> None:
        self._events: weakref.WeakKeyDictionary[asyncio.Task[object], asyncio.Event] = (
            weakref.WeakKeyDictionary()
        )
        self._unconsumed = False

    def set(self) -> None:
        self._unconsumed = True
        for event in self._events.values():
            event.set()

    def is_set(self) -> bool:
        """True while a wake-up has not been consumed by every task it was meant for."""
        return self._unconsumed or any(event.is_set() for event in self._events.values())

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109  (a bounded wait is the point)
        """Return at the next wake-up for this task, or after ``timeout`` seconds."""
        task = asyncio.current_task()
        if task is None:
            await asyncio.sleep(max(0.0, timeout))
            return
        event = self._events.get(task)
        if event is None:
            event = self._events[task] = asyncio.Event()
            if self._unconsumed:
                event.set()
        if not event.is_set() and timeout > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await event.wait()
        if event.is_set():
            event.clear()
            self._unconsumed = False
