"""Waiting on a condition in a test, without pytest (importable from ``meetq.testing``)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

__all__ = ["eventually"]


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
