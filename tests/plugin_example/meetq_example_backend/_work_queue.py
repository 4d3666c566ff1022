"""The example work queue: every ``WorkQueueBackend`` rule in plain Python.

Storage: one dict of jobs (waiting or leased) by id, one insertion-ordered dict of dead
letters, a dedup index and a dict of counters. Every operation is a plain loop over the
jobs — O(n) per call, chosen for reading, not for speed. No method awaits while it
changes state, so each call is atomic on the event loop: the contract's "atomic
enqueue", "no loss window" and "counters in the same step" hold without locks.

A job is in one of two states, and ``due`` means the same in both — "claimable from":

- ``waiting``: ready once ``due`` has passed (publish time, or the end of its delay or
  retry backoff); scheduled before that.
- ``leased``: held by the worker with ``token`` until ``due``, the lease deadline. After
  it, the job may be claimed again (the attempt stays charged); until that claim, its
  old token still settles and extends it, as on the memory and Redis backends.

So ``due`` is also "ready since", which the unhandled-type sweep measures from.
Clock: ``time.monotonic()`` in ms for delays and leases; a dead letter's ``failed_at`` is
wall-clock (``time.time()``) because users read it as a date.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Sequence

import attrs

from meetq.backend import (
    Claimed,
    ClosedError,
    DeadRecord,
    ExchangeResult,
    LeaseRef,
    Settlement,
    StoredMessage,
    ValidationError,
    WorkQueueOptions,
)
from meetq.core.protocols import (
    COUNTER_NAMES,
    DeliveryCallback,
    Maintenance,
    QueueSnapshot,
    WakeCallback,
)

__all__ = ["ExampleWorkQueue"]

WAITING, LEASED = "waiting", "leased"


@attrs.define
class _Job:
    id: str
    type: str
    priority: int
    body: bytes
    seq: int  # publish order; kept by retries and releases, so they keep their place
    due: float
    dedup_key: str | None = None
    state: str = WAITING
    attempts: int = 0
    token: str = ""


def _now() -> float:
    return time.monotonic() * 1000.0


class ExampleWorkQueue:
    """One named queue, held in this process by its ``ExampleBackend``."""

    def __init__(self, name: str, options: WorkQueueOptions) -> None:
        self.name = name
        self.options = options
        self._jobs: dict[str, _Job] = {}
        self._dead: dict[str, DeadRecord] = {}  # insertion order is failure order
        self._dedup: dict[str, str] = {}  # dedup key -> id of the job holding it
        self._handled_until: dict[str, float] = {}  # type -> end of its last heartbeat
        self._worker_until: dict[tuple[str, str], float] = {}  # (worker, type) -> the same
        self._counts = dict.fromkeys(COUNTER_NAMES, 0)
        self._seq = itertools.count()
        self._listeners: list[WakeCallback] = []
        self._closed = False

    # -- helpers -----------------------------------------------------------------------

    def _check_open(self) -> None:
        # Rule: once its backend is closed, every call is refused.
        if self._closed:
            raise ClosedError(f"work queue {self.name!r}: its example backend was closed")

    def _notify(self) -> None:
        # Rule: every listener gets every wake-up (several MessageQueues may share us).
        for callback in list(self._listeners):
            callback()

    def _count(self, *names: str) -> None:
        for name in names:
            self._counts[name] += 1

    def _remove(self, job: _Job) -> None:
        # Rule "bounded growth": after ack/drop/dead nothing of the job remains here.
        del self._jobs[job.id]
        if job.dedup_key is not None:
            self._dedup.pop(job.dedup_key, None)

    def _held(self, lease: LeaseRef) -> _Job | None:
        # Rule "no loss window": only the current token settles or extends a delivery.
        job = self._jobs.get(lease.id)
        if job is None or job.state != LEASED or job.token != lease.token:
            return None
        return job

    def _claim_order(self, now: float, types: set[str] | None = None) -> list[_Job]:
        # Rule "strict priority": highest priority first, FIFO (publish order) within one.
        ready = [
            j for j in self._jobs.values() if j.due <= now and (types is None or j.type in types)
        ]
        return sorted(ready, key=lambda j: (-j.priority, j.seq))

    def _bury(self, job: _Job, error: str, traceback: str = "") -> None:
        self._remove(job)
        self._count("dead_letter")
        self._dead[job.id] = DeadRecord(
            id=job.id,
            type=job.type,
            body=job.body,
            error=error,
            traceback=traceback,
            attempts=job.attempts,
            failed_at=time.time(),
            priority=job.priority,
        )
        self._trim_dead()

    def _trim_dead(self) -> None:
        # Rule: at most dead_letter_max_size dead letters, none older than the max age.
        cutoff = time.time() - self.options.dead_letter_max_age_ms / 1000.0
        while self._dead:
            oldest = next(iter(self._dead.values()))
            if len(self._dead) <= self.options.dead_letter_max_size and oldest.failed_at >= cutoff:
                return
            del self._dead[oldest.id]

    def _unhandled(self, job: _Job, now: float) -> bool:
        return job.due <= now and self._handled_until.get(job.type, 0.0) <= now

    # -- storing and delivering ----------------------------------------------------------

    async def enqueue(self, messages: Sequence[StoredMessage]) -> list[str]:
        self._check_open()
        self._trim_dead()
        now = _now()
        ids: list[str] = []
        for message in messages:
            key = message.dedup_key
            if key is not None and key in self._dedup:
                ids.append(self._dedup[key])  # rule: a dedup hit returns the holder's id
                continue
            if message.id in self._jobs or message.id in self._dead:
                ids.append(message.id)  # the id is waiting, running or dead: store nothing
                continue
            self._jobs[message.id] = _Job(
                id=message.id,
                type=message.type,
                priority=message.priority,
                body=message.body,
                seq=next(self._seq),
                due=now + message.delay_ms,
                dedup_key=key,
            )
            if key is not None:
                self._dedup[key] = message.id
            self._count("published")
            ids.append(message.id)
        self._notify()
        return ids

    async def exchange(
        self,
        settlements: Sequence[Settlement],
        *,
        types: Sequence[str],
        claim: int,
        lease_ms: int,
    ) -> ExchangeResult:
        self._check_open()
        now = _now()
        settled = [self._settle(s, now) for s in settlements]
        claimed: list[Claimed] = []
        if claim > 0:
            ready = self._claim_order(now, set(types))
            if len(ready) > claim:
                self._notify()  # more ready than this worker takes: let others look
            for job in ready[:claim]:
                # Taking the job and recording its lease is this one step.
                job.state, job.due, job.token = LEASED, now + lease_ms, uuid.uuid4().hex
                job.attempts += 1
                claimed.append(
                    Claimed(
                        id=job.id,
                        type=job.type,
                        priority=job.priority,
                        body=job.body,
                        attempt=job.attempts,
                        token=job.token,
                    )
                )
        return ExchangeResult(settled=settled, claimed=claimed)

    def _settle(self, settlement: Settlement, now: float) -> bool:
        job = self._held(settlement.lease)
        if job is None:
            return False  # refused: changes nothing
        outcome = settlement.outcome
        # Rule: the counters of each outcome are core's policy, handed over as data.
        self._count(*self.options.counters_for(outcome))
        if outcome in ("ack", "drop"):  # done, or failed with the dead-letter queue off
            self._remove(job)
        elif outcome == "retry":  # a failed attempt, back to waiting after the backoff
            job.state, job.due = WAITING, now + max(0, settlement.delay_ms)
            self._notify()
        elif outcome == "release":  # back at once, old place, the attempt not charged
            job.state, job.due = WAITING, now
            job.attempts -= 1
            self._notify()
        else:  # "dead"
            self._bury(job, settlement.error, settlement.traceback)
        return True

    async def extend(self, leases: Sequence[LeaseRef], lease_ms: int) -> list[bool]:
        self._check_open()
        deadline = _now() + lease_ms
        held: list[bool] = []
        for lease in leases:
            job = self._held(lease)
            if job is not None:
                job.due = deadline
            held.append(job is not None)
        return held

    async def listen(
        self, callback: WakeCallback, deliver: DeliveryCallback | None = None
    ) -> Callable[[], None]:  # no hand-off at enqueue: ``deliver`` is never called
        # Primed at once: the next _notify() calls it. Delays and backoffs that end are
        # found by core's poll_interval timer, which the contract allows.
        self._check_open()
        self._listeners.append(callback)

        def stop() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return stop

    # -- messages no live worker handles -------------------------------------------------

    async def heartbeat(self, types: Sequence[str], ttl_ms: int, worker: str = "") -> None:
        self._check_open()
        until = _now() + ttl_ms
        for t in types:  # a type is handled while any worker's heartbeat for it lasts
            self._handled_until[t] = max(self._handled_until.get(t, 0.0), until)
            if worker:
                self._worker_until[(worker, t)] = until
        now = until - ttl_ms  # forget workers that stopped beating: live ones only
        self._worker_until = {k: u for k, u in self._worker_until.items() if u > now}

    def _sweep_unhandled(self, unhandled_timeout_ms: int, limit: int, reason: str) -> int:
        now = _now()
        swept = 0
        for job in self._claim_order(now):
            if swept >= limit:
                break
            # The wait counts from the later of becoming ready and the last handler leaving.
            since = max(job.due, self._handled_until.get(job.type, 0.0))
            if self._unhandled(job, now) and now - since >= unhandled_timeout_ms:
                self._bury(job, reason.format(type=job.type))  # the text is core's
                swept += 1
        return swept

    # -- inspection and maintenance ------------------------------------------------------

    async def inspect(self) -> QueueSnapshot:
        self._check_open()
        self._trim_dead()
        now = _now()
        waiting = dict.fromkeys(range(4), 0)
        for job in self._jobs.values():
            if job.state == WAITING:
                waiting[job.priority] += 1
        workers: dict[str, list[str]] = {
            t: [] for t, until in sorted(self._handled_until.items()) if until > now
        }
        for (worker, t), until in sorted(self._worker_until.items()):
            if until > now and t in workers:
                workers[t].append(worker)
        return QueueSnapshot(
            waiting=waiting,
            processing=sum(job.state == LEASED for job in self._jobs.values()),
            dead=len(self._dead),
            unhandled=sum(self._unhandled(job, now) for job in self._jobs.values()),
            counters=dict(self._counts),
            delayed=sum(job.state == WAITING and job.due > now for job in self._jobs.values()),
            workers=workers,
            oldest_age=max(
                (
                    now - job.due
                    for job in self._jobs.values()
                    if job.state == WAITING and job.due <= now
                ),
                default=0.0,
            )
            / 1000.0,
        )

    async def dead_letters(self, limit: int) -> list[DeadRecord]:
        self._check_open()
        self._trim_dead()
        return list(self._dead.values())[: max(0, limit)]

    async def maintain(self, request: Maintenance) -> int:
        self._check_open()
        self._trim_dead()
        if request.action == "requeue_dead":
            return self._requeue_dead(request.limit, request.message_type)
        # limit > 0: at most that many (oldest first); 0: all of them.
        cut = request.limit if request.limit > 0 else None
        if request.action == "purge_waiting":  # waiting ones only; leased ones finish
            waiting = [job for job in self._jobs.values() if job.state == WAITING][:cut]
            for job in waiting:
                self._remove(job)
            return len(waiting)
        if request.action == "purge_dead":
            doomed = list(self._dead)[:cut]
            for dead_id in doomed:
                del self._dead[dead_id]
            return len(doomed)
        if request.action == "sweep_unhandled":
            return self._sweep_unhandled(
                request.unhandled_timeout_ms, request.limit, request.reason
            )
        raise ValidationError("action", request.action, "not a maintenance action")

    def _requeue_dead(self, limit: int, message_type: str | None) -> int:
        now = _now()
        records = [
            r for r in self._dead.values() if message_type is None or r.type == message_type
        ][: max(0, limit)]
        for record in records:
            del self._dead[record.id]
            self._jobs[record.id] = _Job(  # a new job: attempts reset, queued last
                id=record.id,
                type=record.type,
                priority=record.priority,
                body=record.body,
                seq=next(self._seq),
                due=now,
            )
        self._notify()
        return len(records)

    async def aclose(self) -> None:
        """Stop the wake-ups and refuse every later call; the backend's ``aclose`` calls it."""
        self._closed = True
        self._listeners.clear()
