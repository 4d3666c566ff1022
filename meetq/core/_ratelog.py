"""Rate-limited logging: one line per interval for a condition that may repeat a lot.

A flood (a full buffer dropping thousands of events a second, every thread taken, a
stream of undecodable messages) must not flood the log too, yet must never be silent:
``LogEvery.tick()`` says when a line is due and how many occurrences it stands for, so
the line can say "dropped 812 events" instead of hiding 811 of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["LOG_INTERVAL", "LogEvery"]

#: How often a repeating warning is logged at most, in seconds.
LOG_INTERVAL = 5.0


class LogEvery:
    """Counts occurrences; ``tick()`` is non-zero at most once per ``interval``."""

    __slots__ = ("_clock", "_held", "_last", "interval")

    def __init__(
        self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._last = -math.inf  # the first occurrence is always logged
        self._held = 0

    def tick(self) -> int:
        """Count one occurrence. Returns 0 when a line was logged less than
        ``interval`` ago, else how many occurrences the line now due covers (this one
        and the ones held back since the last line)."""
        self._held += 1
        now = self._clock()
        if now - self._last < self.interval:
            return 0
        self._last = now
        held, self._held = self._held, 0
        return held
