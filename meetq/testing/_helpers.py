"""The contract suite's helpers, in one module, without pytest (all in ``meetq.testing``).

- ``eventually(check)``: wait until a sync or async check is truthy (counters that live in
  a backend, where there is no local event to wait on).
- ``wait_until(predicate)``: the same for a plain predicate, with the suite's deadline.
- ``QUICK``: ``MessageQueue`` settings that keep a test's retries and polls short; a test
  that builds its own queue starts from these, so a slow backend is not mistaken for a hang.
- ``TIMEOUT``: the suite's deadline for one wait, in seconds.
- ``Collector``: a PubSub handler that records messages and lets a test wait for a count.

Every wait is on a condition with a deadline; nothing sleeps a fixed time and hopes.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

from meetq.core.types import PubSubMessage

__all__ = ["QUICK", "TIMEOUT", "Collector", "eventually", "wait_until"]

#: The suite's deadline for one wait on a condition, in seconds.
TIMEOUT = 5.0

#: ``MessageQueue`` settings for tests: short leases, polls and backoffs, no jitter.
QUICK: Mapping[str, Any] = MappingProxyType(
    {
        "visibility_timeout": "2s",
        "poll_interval": "50ms",
        "retry_backoff_base": "10ms",
        "retry_backoff_max": "40ms",
        "retry_jitter": 0.0,
        "shutdown_grace": "2s",
    }
)


async def eventually(
    check: Callable[[], Awaitable[object]] | Callable[[], object],
    timeout: float = 10.0,  # noqa: ASYNC109  (a test deadline, not a cancellation scope)
) -> None:
    """Wait until ``check()`` is truthy, re-checking every 5 ms; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate()`` is true; fail after ``TIMEOUT`` seconds.

    For state that has no event to wait on (counters); the test still waits on a
    condition with a deadline, it never sleeps a fixed time and hopes.
    """
    await eventually(predicate, timeout=TIMEOUT)


class Collector:
    """An async handler that records messages and lets a test wait for a count."""

    def __init__(self) -> None:
        self.messages: list[PubSubMessage] = []
        self._changed = asyncio.Event()

    async def __call__(self, message: PubSubMessage) -> None:
        self.messages.append(message)
        self._changed.set()

    async def wait_for(self, count: int) -> list[PubSubMessage]:
        """Wait until ``count`` messages arrived (within ``TIMEOUT``); return them all."""

        async def wait() -> None:
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), TIMEOUT)
        return self.messages

    @property
    def types(self) -> list[str]:
        """The ``type`` of every message so far, in arrival order."""
        return [m.type for m in self.messages]
