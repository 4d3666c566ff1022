"""What ``MessageQueue.inspect()`` returns: one look at a queue, for people and dashboards.

Design (why it looks like this): the backend answers one ``inspect()`` round trip with
raw counts keyed by priority value (``QueueSnapshot``); this is the same look in the
words a user reads — priority names, "running" for leased — plus the queue and backend
names, so a dashboard, ``meetq stats --json`` and a test all read one value. It holds
data only: ``to_dict()`` is its JSON form, and the one place that form is defined.
"""

from __future__ import annotations

from typing import Any

import attrs

from meetq.core.protocols import QueueSnapshot
from meetq.core.types import Priority

__all__ = ["QueueInfo", "traceback_summary"]


@attrs.frozen(kw_only=True)
class QueueInfo:
    """One queue at one moment, shared by every process on a shared backend.

    - ``waiting``: waiting messages (ready or delayed) by priority name
      (``critical``, ``high``, ``normal``, ``low``); ``waiting_total`` their sum;
    - ``delayed``: of those, the ones held back by a delay or a retry's backoff;
    - ``running``: messages a worker (of any process) holds now;
    - ``dead``: dead letters kept;
    - ``unhandled``: ready messages whose type no live worker handles;
    - ``totals``: the queue's counters since it was created (``published``,
      ``processed``, ``failed``, ``retried``, ``dead_letter``, ``dropped``);
    - ``handlers``: each type a live worker handles -> the names of its live workers;
    - ``oldest_age``: seconds the longest-waiting ready message has waited since it
      became ready (0.0 when none is ready; None when the backend cannot tell); see
      ``QueueSnapshot.oldest_age``.
    """

    queue: str
    backend: str
    waiting: dict[str, int]
    delayed: int
    running: int
    dead: int
    unhandled: int
    totals: dict[str, int]
    handlers: dict[str, list[str]]
    oldest_age: float | None = None

    @property
    def waiting_total(self) -> int:
        """Every waiting message, of any priority."""
        return sum(self.waiting.values())

    @classmethod
    def from_snapshot(cls, queue: str, backend: str, snapshot: QueueSnapshot) -> QueueInfo:
        """The user's view of a backend's ``QueueSnapshot``."""
        return cls(
            queue=queue,
            backend=backend,
            # Highest first, the order a reader scans them in.
            waiting={
                p.name.lower(): snapshot.waiting.get(int(p), 0)
                for p in sorted(Priority, reverse=True)
            },
            delayed=snapshot.delayed,
            running=snapshot.processing,
            dead=snapshot.dead,
            unhandled=snapshot.unhandled,
            totals=dict(snapshot.counters),
            handlers={t: list(names) for t, names in snapshot.workers.items()},
            oldest_age=snapshot.oldest_age,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: every field, and ``waiting_total``."""
        return {
            "queue": self.queue,
            "backend": self.backend,
            "waiting": dict(self.waiting),
            "waiting_total": self.waiting_total,
            "delayed": self.delayed,
            "running": self.running,
            "dead": self.dead,
            "unhandled": self.unhandled,
            "totals": dict(self.totals),
            "handlers": {t: list(names) for t, names in self.handlers.items()},
            "oldest_age": self.oldest_age,
        }


def traceback_summary(traceback: str) -> str:
    """A formatted traceback in one line: where it was raised and what.

    ``'File "app.py", line 12, in handle: ValueError: bad input'`` — the innermost
    frame's location and the last line of the traceback. "" for "" (a dead letter whose
    error had no traceback: a timeout, an expired lease, no handler)."""
    lines = [line.strip() for line in traceback.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    frames = [line for line in lines if line.startswith('File "')]
    last = lines[-1]
    return f"{frames[-1]}: {last}" if frames and frames[-1] != last else last
