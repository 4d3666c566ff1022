"""Ending background tasks for sure.

A driver may swallow one cancellation: redis-py's reads under Python 3.11 sometimes let
a ``CancelledError`` that races their own timeout turn into a plain return, and the
loop around the read goes on. ``cancel_until_done`` therefore cancels again while a
task still runs, so a ``stop()`` waiting on its helpers ends within one backend call of
the first cancel instead of never.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Any, Final

__all__ = ["RECANCEL_EVERY", "cancel_until_done"]

#: Seconds between the cancellations of a task that is still running.
RECANCEL_EVERY: Final = 0.5


async def cancel_until_done(
    tasks: Sequence[asyncio.Task[Any]],
    cancel: Collection[asyncio.Task[Any]],
    *,
    every: float = RECANCEL_EVERY,
) -> None:
    """Wait until every task of ``tasks`` has ended, cancelling those of ``cancel`` now
    and again every ``every`` seconds while they run; the others end by themselves.

    Each task's exception is retrieved (none is reported as never retrieved), as
    ``gather(..., return_exceptions=True)`` does. A cancellation of the caller cancels
    every task and reaches the caller.
    """
    pending = {task for task in tasks if not task.done()}
    for task in cancel:
        task.cancel()
    try:
        while pending:
            _, pending = await asyncio.wait(pending, timeout=every)
            for task in pending:
                if task in cancel:
                    task.cancel()
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        raise
    finally:
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()
