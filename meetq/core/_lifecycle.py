"""The lifecycle every meetq component shares, held in one place.

Design (why it looks like this):

- One state machine for every component (``MessageQueue``, ``PubSub``, ``LocalEventBus``,
  ``TaskScheduler``, ``TaskDispatcher``, ``QueueManager``)::

      new --start()--> running --stop()--> stopped
       \\______________stop()_____________/

  ``start()`` runs the component's ``_start()`` once: it is idempotent while running, and
  concurrent calls share one ``_start()``. If ``_start()`` raises (the backend is down),
  the component is still ``new`` and ``start()`` may be called again. Once ``stop()`` has
  been called, ``start()`` raises ``ClosedError``: a stopped component is not restarted,
  build a new one (its buffers, tasks and counters were wound down for good).
- ``stop()`` stays each component's own (grace periods and order differ), and is
  idempotent there. The base records the state around it: ``__init_subclass__`` wraps
  every ``stop`` a subclass defines, so no component can forget to, and a ``start()``
  racing a ``stop()`` sees it at once.
- Components read the state from here (``lifecycle``, ``_stopping``) instead of keeping
  flags of their own. What stays theirs is what happens *inside* ``stop()`` (a second
  call returning or waiting, a cancelled ``stop()`` that may run again, the message
  queue's last flush) and the event bus's thread-visible closed flag, which other
  threads read under its lock.
- ``async with x:`` runs ``await x.start()`` and, on the way out, ``await x.stop()``.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

from meetq.core.errors import ClosedError

__all__ = ["AsyncService", "Lifecycle"]


class Lifecycle(enum.Enum):
    """Where a component is in its life."""

    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class AsyncService:
    """The ``start``/``stop`` rules of every meetq component (see the module docstring).

    Subclasses implement ``_start()`` and ``stop()``.
    """

    _lifecycle: Lifecycle = Lifecycle.NEW
    _lifecycle_lock: asyncio.Lock | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        stop = cls.__dict__.get("stop")
        if stop is not None:
            setattr(cls, "stop", _recording_stop(stop))  # noqa: B010  (mypy: method assignment)

    @property
    def lifecycle(self) -> Lifecycle:
        """``new``, ``running`` or ``stopped`` (once ``stop()`` was called)."""
        return self._lifecycle

    @property
    def _stopping(self) -> bool:
        """``stop()`` has been called (it may still be running): take no more work."""
        return self._lifecycle is Lifecycle.STOPPED

    def _describe(self) -> str:
        """How errors name this component."""
        return f"this {type(self).__name__}"

    def _refuse_if_stopped(self) -> None:
        if self._lifecycle is Lifecycle.STOPPED:
            raise ClosedError(f"{self._describe()} was stopped; build a new one")

    async def start(self) -> None:
        """Start (idempotent). Raises ``ClosedError`` after ``stop()``; if it raises
        anything else, nothing is left running and ``start()`` may be called again."""
        if self._lifecycle is Lifecycle.RUNNING:
            return
        self._refuse_if_stopped()
        if self._lifecycle_lock is None:
            self._lifecycle_lock = asyncio.Lock()
        async with self._lifecycle_lock:
            if self.lifecycle is Lifecycle.RUNNING:  # started while we waited for the lock
                return
            self._refuse_if_stopped()  # stopped while waiting for a concurrent start
            await self._start()
            # A stop() during _start() wins: the component stays stopped.
            if self._lifecycle is Lifecycle.NEW:
                self._lifecycle = Lifecycle.RUNNING

    async def _start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _recording_stop(
    stop: Callable[..., Awaitable[None]],
) -> Callable[..., Awaitable[None]]:
    @functools.wraps(stop)
    async def recorded(self: AsyncService, *args: Any, **kwargs: Any) -> None:
        # Before the component's own stop(): a start() from now on is refused.
        self._lifecycle = Lifecycle.STOPPED
        await stop(self, *args, **kwargs)

    return recorded
