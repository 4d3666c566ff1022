"""The one exponential backoff every retry and reconnect in meetq uses.

Design (why it looks like this):

- Attempt ``n`` (counted from 1) waits ``min(max, base * 2**(n-1))``: doubling from the
  base, capped. ``jitter`` shortens each wait by a random part of at most ``jitter`` of
  itself, so many workers retrying the same failure do not come back in step; with
  ``jitter=0`` the waits are exact (stop-and-retry loops that must not drift).
- One value type instead of a formula per call site: the message queue's retries, the
  scheduler's, the dispatcher's deadline, the exchange loop's error pause, the PubSub
  reader's restart and the Redis reconnects all build a ``Backoff`` from their settings.
  A backend that must apply a policy gets one as data.
"""

from __future__ import annotations

import random

import attrs

__all__ = ["Backoff"]

# 2.0 ** 1024 overflows a float; a wait that long is capped by ``max`` long before.
_MAX_EXPONENT = 1000


@attrs.frozen
class Backoff:
    """Exponential backoff: ``base`` and ``max`` in seconds, ``jitter`` from 0 to 1."""

    base: float
    max: float
    jitter: float = 0.0

    def ceiling(self, attempt: int) -> float:
        """The longest wait before attempt ``attempt + 1`` (``attempt`` failures so far,
        from 1): ``min(max, base * 2**(attempt-1))``, jitter not applied."""
        exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
        return min(self.max, self.base * 2.0**exponent)

    def delay(self, attempt: int) -> float:
        """The wait after failure number ``attempt``: the ceiling, shortened by a random
        part of at most ``jitter`` of it."""
        ceiling = self.ceiling(attempt)
        if not self.jitter:
            return ceiling
        return ceiling * (1.0 - self.jitter * random.random())

    def total_ceiling(self, attempts: int) -> float:
        """The longest time ``attempts`` waits can take together (a deadline's share)."""
        return sum(self.ceiling(n) for n in range(1, attempts + 1))
