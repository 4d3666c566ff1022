"""One timeout for many concurrent calls, served by a single timer.

Why: the hot paths (the work queue's EVALSHA, Pub/Sub's PUBLISH) must end within
``redis.socket_timeout`` against a server that stopped answering, but redis-py's own
socket timeout runs every send under ``asyncio.wait_for`` (a task per command) and every
read under a timer, and even one ``asyncio.timeout`` per call arms and cancels a timer
handle: about 5 us here, a twentieth of a publish. Every call guarded by one
``SharedDeadline`` has the same timeout, so the deadlines come in the order the calls
began: the oldest call still running has the earliest, and one timer set for it serves
them all. A call then costs two dict operations; the timer fires about once per timeout.

The semantics are ``asyncio.timeout``'s: an expired call is cancelled, and its
``CancelledError`` becomes ``TimeoutError`` where the scope is left, unless the task was
also cancelled by someone else, whose cancellation then goes on.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["SharedDeadline"]


class SharedDeadline:
    """``with deadline.scope():`` bounds the enclosed awaits to ``seconds`` in total."""

    __slots__ = ("_loop", "_scopes", "_timer", "name", "seconds")

    def __init__(self, seconds: float, name: str = "timeout") -> None:
        self.seconds = seconds
        self.name = name  # the config key, named in the error
        # Running scopes -> deadline, in the order they began (so by deadline, too).
        self._scopes: dict[_Scope, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def scope(self) -> _Scope:
        return _Scope(self)

    def _add(self, scope: _Scope) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new loop (the old timer died with it)
            self._loop, self._timer = loop, None
            self._scopes.clear()
        deadline = loop.time() + self.seconds
        self._scopes[scope] = deadline
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        scopes = self._scopes
        while scopes:
            scope, deadline = next(iter(scopes.items()))
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire)
                return
            del scopes[scope]
            scope.expired = True
            scope.task.cancel()


class _Scope:
    __slots__ = ("_cancelling", "_owner", "expired", "task")

    def __init__(self, owner: SharedDeadline) -> None:
        self._owner = owner
        self.expired = False

    def __enter__(self) -> _Scope:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("SharedDeadline.scope() must be used inside a task")
        self.task = task
        self._cancelling = task.cancelling()
        self._owner._add(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.expired:
            self._owner._scopes.pop(self, None)
            return
        # Ours was the cancellation (and nobody else's came on top): report a timeout.
        if self.task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            owner = self._owner
            raise TimeoutError(f"no reply within {owner.seconds:g}s ({owner.name})") from None
