"""How meetq runs user code (handlers, callbacks): one set of rules for every component.

Every component (``MessageQueue``, ``PubSub``, ``LocalEventBus``, ``TaskScheduler``,
``TaskDispatcher``) calls its handlers and callbacks through ``call_user`` (or, on the
per-event hot paths without a timeout, ``user_runner`` plus ``user_failure``: the same
rules without a frame of their own) and handles one outcome, ``UserCodeFailed``; none
keeps its own copy of the rules below.

Design (why it looks like this):

- An ``async def`` runs on the event loop; a plain function runs in a thread, and if it
  returns an awaitable, that is awaited on the loop.
- ``StopIteration`` cannot cross a Future: asyncio refuses it (``TypeError`` inside a
  loop callback), so the awaiting task would wait forever. Raised by a plain function it
  becomes ``RuntimeError("handler raised StopIteration")`` in the thread, the way PEP 479
  already turns it into ``RuntimeError`` inside a coroutine.
- What a handler raises is a failed call of that handler, ``SystemExit``,
  ``GeneratorExit`` and any other ``BaseException`` included: a poison message calling
  ``sys.exit()`` must not take down every worker that picks it up, nor end the process
  with status 0. Only ``KeyboardInterrupt`` (``PROPAGATES``) is the operator's and
  propagates. A
  ``CancelledError`` the handler raised itself is a failure too; ``call_user`` tells it
  apart from the caller's own cancellation with ``Task.cancelling()``.
- A timeout is ours only when our scope ran out (``HandlerTimeout``); a ``TimeoutError``
  the handler raised itself (a socket, an HTTP client) is its failure, not relabelled.
- ``SyncThreads`` is the message queue's own pool for plain handlers: sized from config,
  a thread is *reserved* before a message is taken on, so a message never waits for a
  thread, and a timeout counts from the moment the handler really starts. A thread whose
  handler ran past its timeout cannot be stopped; it stays counted (``abandoned``) until
  it returns, so a pool exhausted by stuck handlers claims no more plain-handler work
  instead of charging messages that never ran. Its threads are daemons: a stuck handler
  cannot keep the process from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import queue
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from meetq.core.errors import HandlerTimeout

__all__ = [
    "PROPAGATES",
    "SyncThreads",
    "SyncTimedOut",
    "Ticket",
    "UserCodeFailed",
    "call_user",
    "run_in_thread",
    "user_failure",
    "user_runner",
]

#: What a handler may raise that is not a failed call but goes on up: the operator's
#: Ctrl-C. Everything else a handler raises (``SystemExit`` too) fails that call only.
PROPAGATES: tuple[type[BaseException], ...] = (KeyboardInterrupt,)


class SyncTimedOut(Exception):
    """A plain handler ran past its timeout (counted from its start); its thread runs on."""


class _Raised:
    """A ``BaseException`` (not an ``Exception``) a plain function raised, carried back as
    a value: thrown into a coroutine chain through a Future, a ``GeneratorExit`` would
    close every awaiting frame but the outermost instead of reaching its handler."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _guarded(func: Callable[..., Any], *args: Any) -> Any:
    try:
        return func(*args)
    except StopIteration as exc:
        raise RuntimeError("handler raised StopIteration") from exc
    except Exception:
        raise
    except BaseException as exc:  # SystemExit, GeneratorExit, KeyboardInterrupt, ...
        return _Raised(exc)


def _unbox(result: Any) -> Any:
    if type(result) is _Raised:
        raise result.exc  # raised here, in the awaiting frame, like any exception
    return result


async def run_in_thread(func: Callable[..., Any], *args: Any) -> Any:
    """``func(*args)`` in the default executor, an awaitable result awaited here."""
    result = _unbox(await asyncio.to_thread(_guarded, func, *args))
    if inspect.isawaitable(result):
        result = await result
    return result


class SyncThreads:
    """A fixed number of daemon threads for plain handlers, with reservations.

    Used from the event loop's thread only (the counters are plain ints); worker threads
    report back with ``call_soon_threadsafe``.
    """

    def __init__(self, threads: int, name: str, on_free: Callable[[], None]) -> None:
        self.threads = threads
        self._name = name
        self._on_free = on_free
        self.busy = 0  # reserved or running, abandoned ones included
        self.abandoned = 0  # timed out or cancelled, still running in their thread
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._closed = False

    @property
    def free(self) -> int:
        return self.threads - self.busy

    def reserve(self) -> Ticket | None:
        """A thread for one call, or None when every thread is taken."""
        if self._closed or self.busy >= self.threads:
            return None
        self.busy += 1
        # Never fewer threads than reservations, so a submitted job starts at once.
        if len(self._workers) < self.busy:
            worker = threading.Thread(
                target=self._work, name=f"meetq-{self._name}-{len(self._workers)}", daemon=True
            )
            self._workers.append(worker)
            worker.start()
        return Ticket(self)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()

    def _returned(self, abandoned: bool) -> None:
        self.busy -= 1
        if abandoned:
            self.abandoned -= 1
        self._on_free()

    def shutdown(self) -> None:
        """Let idle threads end; a stuck one is a daemon and is not waited for."""
        if self._closed:
            return
        self._closed = True
        for _ in self._workers:
            self._jobs.put(None)


class Ticket:
    """One reserved thread: ``run`` uses it once; ``close`` gives it back unused."""

    __slots__ = ("_pool", "_used")

    def __init__(self, pool: SyncThreads) -> None:
        self._pool = pool
        self._used = False

    def close(self) -> None:
        if not self._used:
            self._used = True
            self._pool._returned(False)

    async def run(self, func: Callable[[Any], Any], arg: Any, timeout: float | None) -> Any:  # noqa: ASYNC109  (the limit starts in the thread, not here)
        """``func(arg)`` on the reserved thread; ``timeout`` counts from its start.

        Raises ``SyncTimedOut`` when it runs past ``timeout``; what ``func`` raises
        otherwise (``StopIteration`` as ``RuntimeError``).
        """
        if self._used:
            raise RuntimeError("a Ticket runs one call")
        self._used = True
        pool = self._pool
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[Any] = loop.create_future()
        began: list[float] = []  # the thread's start on the loop's clock (time.monotonic)
        given_up = False
        timer: asyncio.TimerHandle | None = None

        def settle(ok: bool, value: Any) -> None:  # on the loop, after the call returned
            if not outcome.done():
                if ok:
                    outcome.set_result(value)
                else:
                    outcome.set_exception(value)
            pool._returned(given_up)

        def job() -> None:  # in the worker thread
            began.append(time.monotonic())
            try:
                value, ok = context.run(_guarded, func, arg), True
            except BaseException as exc:  # every outcome goes back to the loop
                value, ok = exc, False
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, ok, value)

        def check_deadline() -> None:
            # Armed from submission; the limit counts from the thread's start, so a
            # handler that started late gets its full time (one wake-up per call saved:
            # the thread does not report its start, the timer looks it up).
            nonlocal timer
            if outcome.done():
                return
            assert timeout is not None
            due = (began[0] if began else loop.time()) + timeout
            if loop.time() < due:
                timer = loop.call_at(due, check_deadline)
                return
            outcome.set_exception(SyncTimedOut())

        context = contextvars.copy_context()
        if timeout is not None:
            timer = loop.call_at(loop.time() + timeout, check_deadline)
        pool._jobs.put(job)
        try:
            result = await outcome
        except SyncTimedOut:
            given_up = True
            pool.abandoned += 1
            raise
        except asyncio.CancelledError:
            if outcome.cancelled():
                given_up = True  # its call has not returned: it runs on in its thread
                pool.abandoned += 1
            raise
        finally:
            if timer is not None:
                timer.cancel()
        result = _unbox(result)
        if inspect.isawaitable(result):
            async with asyncio.timeout(timeout):
                result = await result
        return result


class UserCodeFailed(Exception):
    """A user callable did not return: what it raised (``exc``), or our timeout ran out.

    The one outcome every component handles: the handler's own ``CancelledError``,
    ``SystemExit``, ``GeneratorExit`` and ``TimeoutError`` all arrive as this, so no
    component re-derives which exceptions are whose.
    """

    def __init__(
        self, exc: BaseException, *, timeout: float | None = None, cancelled: bool = False
    ) -> None:
        super().__init__(exc)
        #: What the call raised; a ``HandlerTimeout`` when ``timeout`` ran out.
        self.exc = exc
        #: The timeout that ran out (ours, counted from the call's start), else None.
        self.timeout = timeout
        #: True when the callable raised ``CancelledError`` itself (it awaited something
        #: another task cancelled); never for the caller's own cancellation.
        self.cancelled = cancelled

    @property
    def error(self) -> str:
        """One line for a record or a log: ``"ValueError: bad"``; the timeout's text."""
        if self.timeout is not None:
            return str(self.exc)
        if self.cancelled:
            return "CancelledError raised by the handler"
        return f"{type(self.exc).__name__}: {self.exc}"

    def format_traceback(self, limit: int = 20) -> str:
        """The call's traceback as text ("" for a timeout: there is no frame to show)."""
        if self.timeout is not None:
            return ""
        return "".join(traceback.format_exception(self.exc, limit=limit))


async def call_user(
    func: Callable[..., Any],
    *args: Any,
    is_async: bool,
    timeout: float | None = None,  # noqa: ASYNC109  (the callable's limit, enforced here)
    ticket: Ticket | None = None,
) -> Any:
    """Call ``func(*args)`` by the rules in the module docstring and return its result.

    ``is_async`` (``is_async_callable(func)``, computed once at registration): True runs
    it on the loop, False in a thread — the reserved ``ticket``'s when given, else the
    default executor — and an awaitable a plain function returns is awaited on the loop.
    ``timeout`` bounds the call (for a thread, from the moment it starts). A ``ticket``
    runs a call of one argument (a message queue handler).

    Raises ``UserCodeFailed`` for every way the call can fail; ``CancelledError`` only
    when the calling task itself is being cancelled; ``KeyboardInterrupt`` as it is.
    """
    scope: asyncio.Timeout | None = None
    try:
        if ticket is not None:
            (arg,) = args
            return await ticket.run(func, arg, timeout)
        if timeout is None:
            if is_async:
                return await func(*args)
            return await run_in_thread(func, *args)
        async with asyncio.timeout(timeout) as scope:
            if is_async:
                return await func(*args)
            return await run_in_thread(func, *args)
    except SyncTimedOut:
        assert timeout is not None
        raise UserCodeFailed(HandlerTimeout(timeout), timeout=timeout) from None
    except TimeoutError as exc:
        if timeout is not None and scope is not None and scope.expired():
            raise UserCodeFailed(HandlerTimeout(timeout), timeout=timeout) from None
        # The callable's own TimeoutError (a socket, an HTTP client): its failure.
        raise UserCodeFailed(exc) from None
    except BaseException as exc:
        raise user_failure(exc) from None


def user_runner(func: Callable[..., Any], *, is_async: bool) -> Callable[..., Awaitable[Any]]:
    """How to call ``func`` without a timeout, decided once (at registration): ``func``
    itself when it is async (no extra frame on a hot path), else a call in a thread
    whose awaitable result is awaited. What awaiting it raises goes to
    ``user_failure``; ``call_user`` is the same with a timeout or a reserved thread."""
    if is_async:
        return func
    return functools.partial(run_in_thread, func)


def user_failure(exc: BaseException) -> UserCodeFailed:
    """What a call of user code raised, as the one outcome components handle.

    Re-raises what is not a failed call: the calling task's own cancellation (the
    component's ``stop()``, ``cancel_task``) and ``KeyboardInterrupt``. A
    ``CancelledError`` the callable raised itself is a failure (``cancelled=True``);
    so is everything else, ``SystemExit`` and ``GeneratorExit`` included.
    """
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise exc
        return UserCodeFailed(exc, cancelled=True)
    if isinstance(exc, PROPAGATES):
        raise exc
    return UserCodeFailed(exc)
