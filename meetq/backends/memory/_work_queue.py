"""The in-memory work queue: the reference implementation of ``WorkQueueBackend``.

Same semantics as the Redis backend, state held in dicts and heaps. Heaps use lazy
deletion: an entry in a heap counts only while the message is still in that state with
that version, so every transition is O(log n) and nothing needs scanning.

The rules it applies but does not own come in as data: the dead-letter caps, which
counters each settlement outcome bumps and the limits per type (``WorkQueueOptions``),
retry delays (``Settlement.delay_ms``), the unhandled sweep's timeout and reason
(``Maintenance``). Wake-ups are plain callbacks, called synchronously when a message
becomes ready.

Limits: a concurrency limit counts the type's leases (``_leased``); a rate limit is a
token bucket per type (``_buckets``: tokens and when they were counted, on this
process's monotonic clock), refilled lazily when a claim looks at it. ``_caps`` says how
many of each limited type one claim may take; ``_pop_best`` skips a type at its cap.

Tracking (``CAP_TRACKING``: status, cancel, progress, finished records) is the mixin in
``_tracking.py``; a claim's token carries the claiming worker and the claim time
(``LeaseLabel``).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from enum import Enum

import attrs

from meetq.backends.memory._tracking import MemoryTracking
from meetq.core.errors import ClosedError, ValidationError
from meetq.core.protocols import (
    COUNTER_NAMES,
    Claimed,
    DeadRecord,
    DeliveryCallback,
    ExchangeResult,
    LeaseRef,
    Maintenance,
    QueueSnapshot,
    ScheduleStore,
    Settlement,
    StoredMessage,
    WakeCallback,
    WorkQueueOptions,
)
from meetq.core.tracking import LeaseLabel

__all__ = ["MemoryWorkQueue"]

# Ready order: the highest priority first, then publish order. Same encoding as Redis.
_SEQ_SPAN = 2**44


class _State(Enum):
    READY = "ready"
    DELAYED = "delayed"
    LEASED = "leased"
    DEAD = "dead"


@attrs.define
class _Entry:
    id: str
    type: str
    priority: int
    body: bytes
    score: int
    dedup_key: str | None
    state: _State
    version: int = 0
    attempts: int = 0
    token: str = ""
    ready_at: float = 0.0
    due_at: float = 0.0


def _now_ms() -> float:
    return time.monotonic() * 1000.0


class MemoryWorkQueue(MemoryTracking):
    """One named queue held in this process."""

    def __init__(self, name: str, options: WorkQueueOptions) -> None:
        self.name = name
        self._options = options
        self._outcome_counters = dict(options.outcome_counters)
        self._seq = itertools.count(1)
        self._entries: dict[str, _Entry] = {}
        self._ready: dict[str, list[tuple[int, str, int]]] = {}
        self._delayed: dict[str, list[tuple[float, int, str, int]]] = {}
        self._leases: dict[str, list[tuple[float, str, int]]] = {}
        self._deadline: dict[str, float] = {}
        self._dedup: dict[str, str] = {}
        self._dead: dict[str, DeadRecord] = {}  # insertion order = failure order
        self._handlers: dict[str, float] = {}
        self._workers: dict[tuple[str, str], float] = {}  # (worker, type) -> expiry
        self._counts: Counter[str] = Counter()
        self._waiting: Counter[int] = Counter()
        self._processing = 0
        self._delayed_count = 0  # entries in state DELAYED (kept by _bump and the purge)
        self._listeners: list[WakeCallback] = []
        self._token_seq = itertools.count(1)
        self._token_prefix = uuid.uuid4().hex[:12]
        self._closed = False
        self._limits = {limit.type: limit for limit in options.limits}
        self._concurrency_limited = frozenset(
            t for t, limit in self._limits.items() if limit.concurrency
        )
        self._leased: Counter[str] = Counter()  # leases held, per type
        self._buckets: dict[str, tuple[float, float]] = {}  # type -> (tokens, at ms)
        self._tracking_init()
        self._schedules: ScheduleStore | None = None

    # -- transitions -------------------------------------------------------------------

    def _bump(self, entry: _Entry, state: _State) -> int:
        self._delayed_count += (state is _State.DELAYED) - (entry.state is _State.DELAYED)
        entry.state = state
        entry.version += 1
        return entry.version

    def _make_ready(self, entry: _Entry, now: float) -> None:
        version = self._bump(entry, _State.READY)
        entry.ready_at = now
        heapq.heappush(self._ready.setdefault(entry.type, []), (entry.score, entry.id, version))

    def _make_delayed(self, entry: _Entry, due: float) -> None:
        version = self._bump(entry, _State.DELAYED)
        entry.due_at = due
        heap = self._delayed.setdefault(entry.type, [])
        heapq.heappush(heap, (due, next(self._seq), entry.id, version))

    def _forget(self, entry: _Entry) -> None:
        self._entries.pop(entry.id, None)
        self._deadline.pop(entry.id, None)
        if entry.dedup_key is not None and self._dedup.get(entry.dedup_key) == entry.id:
            del self._dedup[entry.dedup_key]
        entry.version += 1

    def _signal(self) -> None:
        for callback in list(self._listeners):
            callback()

    def _score(self, priority: int) -> int:
        return (3 - priority) * _SEQ_SPAN + next(self._seq)

    # -- WorkQueueBackend --------------------------------------------------------------

    async def enqueue(self, messages: Sequence[StoredMessage]) -> list[str]:
        self._check_open()
        return self._store(messages)

    def _store(self, messages: Sequence[StoredMessage]) -> list[str]:
        # Never suspends: the schedule store's fire calls it between check and write.
        now = _now_ms()
        ids: list[str] = []
        claimed_keys: dict[str, str] = {}
        woke = False
        for message in messages:
            key = message.dedup_key
            if key is not None:
                holder = self._dedup.get(key) or claimed_keys.get(key)
                if holder is not None:
                    ids.append(holder)
                    continue
                claimed_keys[key] = message.id
            if message.id in self._entries or message.id in self._dead:
                # The id is taken (waiting, running or dead-lettered): store nothing.
                ids.append(message.id)
                continue
            entry = _Entry(
                id=message.id,
                type=message.type,
                priority=message.priority,
                body=message.body,
                score=self._score(message.priority),
                dedup_key=key,
                state=_State.READY,
            )
            self._entries[entry.id] = entry
            if key is not None:
                self._dedup[key] = entry.id
            if message.delay_ms > 0:
                self._make_delayed(entry, now + message.delay_ms)
            else:
                self._make_ready(entry, now)
                woke = True
            self._waiting[entry.priority] += 1
            self._counts["published"] += 1
            ids.append(entry.id)
        if woke:
            self._signal()
        return ids

    def _holds(self, lease: LeaseRef) -> _Entry | None:
        entry = self._entries.get(lease.id)
        if entry is None or entry.state is not _State.LEASED or entry.token != lease.token:
            return None
        return entry

    def _settle(self, settlement: Settlement, now: float) -> bool:
        entry = self._holds(settlement.lease)
        if entry is None:
            return False
        if settlement.keep_ms:
            self._track(settlement)
        self._processing -= 1
        self._leased[entry.type] -= 1
        outcome = settlement.outcome
        for counter in self._outcome_counters.get(outcome, ()):
            self._counts[counter] += 1
        if outcome == "ack":
            self._forget(entry)
        elif outcome == "retry":
            self._waiting[entry.priority] += 1
            self._deadline.pop(entry.id, None)
            self._make_delayed(entry, now + max(0, settlement.delay_ms))
            if settlement.delay_ms <= 0:
                self._signal()  # due at once: another idle worker may take it
        elif outcome == "release":
            entry.attempts -= 1
            self._waiting[entry.priority] += 1
            self._deadline.pop(entry.id, None)
            self._make_ready(entry, now)
            self._signal()
        elif outcome == "dead":
            self._bury(entry, settlement.error, settlement.traceback)
        else:  # drop
            self._forget(entry)
        return True

    def _bury(self, entry: _Entry, error: str, traceback: str) -> None:
        self._counts["dead_letter"] += 1
        self._forget(entry)
        self._bump(entry, _State.DEAD)
        self._dead[entry.id] = DeadRecord(
            id=entry.id,
            type=entry.type,
            body=entry.body,
            error=error,
            traceback=traceback,
            attempts=entry.attempts,
            failed_at=time.time(),
            priority=entry.priority,
        )
        self._trim_dead()

    def _trim_dead(self) -> None:
        cutoff = time.time() - self._options.dead_letter_max_age_ms / 1000.0
        while self._dead:
            oldest = next(iter(self._dead.values()))
            if len(self._dead) > self._options.dead_letter_max_size or oldest.failed_at < cutoff:
                del self._dead[oldest.id]
            else:
                break

    def _refresh(self, message_type: str, now: float) -> None:
        """Due delayed messages and expired leases of one type become ready."""
        delayed = self._delayed.get(message_type)
        while delayed and delayed[0][0] <= now:
            _, _, message_id, version = heapq.heappop(delayed)
            entry = self._entries.get(message_id)
            if entry is not None and entry.version == version:
                self._make_ready(entry, now)
        leases = self._leases.get(message_type)
        while leases and leases[0][0] <= now:
            _, message_id, version = heapq.heappop(leases)
            entry = self._entries.get(message_id)
            if entry is None or entry.version != version:
                continue
            deadline = self._deadline.get(message_id, 0.0)
            if deadline > now:  # extended since this heap item was pushed
                heapq.heappush(leases, (deadline, message_id, version))
                continue
            self._processing -= 1
            self._leased[message_type] -= 1
            self._waiting[entry.priority] += 1
            self._deadline.pop(message_id, None)
            self._make_ready(entry, now)

    def _head(self, message_type: str) -> tuple[int, str, int] | None:
        """The best live ready item of the type (stale heap items dropped), or None."""
        heap = self._ready.get(message_type)
        while heap:
            _, message_id, version = heap[0]
            entry = self._entries.get(message_id)
            if entry is not None and entry.version == version:
                return heap[0]
            heapq.heappop(heap)  # stale: the message moved on
        return None

    def _pop_best(self, types: Sequence[str], caps: dict[str, int]) -> _Entry | None:
        best: tuple[int, str, int] | None = None
        best_type = ""
        for message_type in types:
            if caps.get(message_type, 1) <= 0:
                continue  # held back by a limit: it stays ready, others go on
            head = self._head(message_type)
            if head is not None and (best is None or head < best):
                best, best_type = head, message_type
        if best is None:
            return None
        heapq.heappop(self._ready[best_type])
        return self._entries[best[1]]

    # -- limits --------------------------------------------------------------------------

    def _tokens(self, message_type: str, rate_per_ms: float, bucket: float, now: float) -> float:
        """The type's bucket refilled up to ``now`` (``burst`` the first time)."""
        tokens, at = self._buckets.get(message_type, (float(math.floor(bucket)), now))
        tokens = min(bucket, tokens + max(0.0, now - at) * rate_per_ms)
        self._buckets[message_type] = (tokens, now)
        return tokens

    def _caps(self, types: Sequence[str], now: float) -> dict[str, int]:
        """How many of each limited type among ``types`` this claim may lease."""
        caps: dict[str, int] = {}
        for message_type in types:
            limit = self._limits.get(message_type)
            if limit is None:
                continue
            cap = math.inf
            if limit.concurrency:
                cap = limit.concurrency - self._leased[message_type]
            if limit.rate_per_ms:
                tokens = self._tokens(message_type, limit.rate_per_ms, limit.bucket, now)
                cap = min(cap, math.floor(tokens))
            caps[message_type] = int(max(0, min(cap, 2**31)))
        return caps

    def _retry_after(self, caps: dict[str, int]) -> int:
        """Milliseconds until the next token of a type whose ready messages wait only
        for one (0: none does)."""
        wait = 0
        for message_type in caps:
            limit = self._limits[message_type]
            if not limit.rate_per_ms or self._head(message_type) is None:
                continue
            if limit.concurrency and self._leased[message_type] >= limit.concurrency:
                continue  # a settlement frees it, and wakes the listeners
            tokens, _ = self._buckets[message_type]
            if tokens < 1.0:
                due = max(1, math.ceil((1.0 - tokens) / limit.rate_per_ms))
                wait = due if not wait else min(wait, due)
        return wait

    async def exchange(
        self,
        settlements: Sequence[Settlement],
        *,
        types: Sequence[str],
        claim: int,
        lease_ms: int,
        worker: str = "",
    ) -> ExchangeResult:
        self._check_open()
        now = _now_ms()
        # The token names the claimer and the claim time (tracking: LeaseLabel).
        label = LeaseLabel.prefix(worker, int(time.time() * 1000)) + self._token_prefix
        settled = [self._settle(s, now) for s in settlements]
        claimed: list[Claimed] = []
        retry_after = 0
        if claim > 0:
            for message_type in types:
                self._refresh(message_type, now)
            deadline = now + lease_ms
            caps = self._caps(types, now) if self._limits else {}
            while len(claimed) < claim:
                entry = self._pop_best(types, caps)
                if entry is None:
                    break
                if entry.type in caps:
                    caps[entry.type] -= 1
                    if self._limits[entry.type].rate_per_ms:
                        tokens, at = self._buckets[entry.type]
                        self._buckets[entry.type] = (tokens - 1.0, at)
                self._leased[entry.type] += 1
                version = self._bump(entry, _State.LEASED)
                entry.attempts += 1
                entry.token = f"{label}:{next(self._token_seq)}"
                self._deadline[entry.id] = deadline
                heapq.heappush(
                    self._leases.setdefault(entry.type, []), (deadline, entry.id, version)
                )
                self._waiting[entry.priority] -= 1
                self._processing += 1
                claimed.append(
                    Claimed(
                        id=entry.id,
                        type=entry.type,
                        priority=entry.priority,
                        body=entry.body,
                        attempt=entry.attempts,
                        token=entry.token,
                    )
                )
            if caps and len(claimed) < claim:  # a full claim: the caller does not wait
                retry_after = self._retry_after(caps)
        if self._concurrency_limited and settlements and self._freed(settlements):
            self._signal()
        return ExchangeResult(settled=settled, claimed=claimed, retry_after_ms=retry_after)

    def _freed(self, settlements: Sequence[Settlement]) -> bool:
        """A settled type is concurrency-limited, below its limit now, and has ready
        messages: a worker held back by the limit (anywhere) should claim again."""
        limited = self._concurrency_limited
        for message_type in {s.lease.type for s in settlements if s.lease.type in limited}:
            if (
                self._leased[message_type] < self._limits[message_type].concurrency
                and self._head(message_type) is not None
            ):
                return True
        return False

    async def extend(self, leases: Sequence[LeaseRef], lease_ms: int) -> list[bool]:
        self._check_open()
        deadline = _now_ms() + lease_ms
        result = []
        for lease in leases:
            entry = self._holds(lease)
            if entry is not None:
                self._deadline[entry.id] = deadline
            result.append(entry is not None)
        return result

    async def listen(
        self, callback: WakeCallback, deliver: DeliveryCallback | None = None
    ) -> Callable[[], None]:
        # No hand-off at enqueue here (``deliver`` unused): a wake-up is a direct call
        # in the same process, already as fast as a hand-off would be.
        self._check_open()
        self._listeners.append(callback)

        def stop() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return stop

    async def heartbeat(self, types: Sequence[str], ttl_ms: int, worker: str = "") -> None:
        self._check_open()
        now = _now_ms()
        expiry = now + ttl_ms
        for message_type in types:
            self._handlers[message_type] = max(self._handlers.get(message_type, 0.0), expiry)
            if worker:
                self._workers[(worker, message_type)] = expiry
        # Expired worker entries go here, so the dict holds live workers only.
        for key in [k for k, until in self._workers.items() if until <= now]:
            del self._workers[key]

    def _live_workers(self, now: float) -> dict[str, list[str]]:
        live: dict[str, list[str]] = {
            t: [] for t, until in self._handlers.items() if until > now
        }
        for (worker, message_type), until in self._workers.items():
            if until > now and message_type in live:
                live[message_type].append(worker)
        return {t: sorted(names) for t, names in sorted(live.items())}

    def _unhandled_types(self, now: float) -> list[str]:
        known = self._ready.keys() | self._delayed.keys()
        return [t for t in known if self._handlers.get(t, 0.0) <= now]

    def _sweep_unhandled(self, unhandled_timeout_ms: int, limit: int, reason: str) -> int:
        now = _now_ms()
        swept = 0
        for message_type in self._unhandled_types(now):
            self._refresh(message_type, now)
            heap = self._ready.setdefault(message_type, [])
            # Waits count from the later of becoming ready and the last handler leaving.
            gone = self._handlers.get(message_type, 0.0)
            keep: list[tuple[int, str, int]] = []
            while heap and swept < limit:
                item = heapq.heappop(heap)
                entry = self._entries.get(item[1])
                if entry is None or entry.version != item[2]:
                    continue
                if now - max(entry.ready_at, gone) < unhandled_timeout_ms:
                    keep.append(item)
                    continue
                self._waiting[entry.priority] -= 1
                self._bury(entry, reason.format(type=entry.type), "")
                swept += 1
            for item in keep:
                heapq.heappush(heap, item)
        return swept

    def _unhandled_count(self) -> int:
        now = _now_ms()
        count = 0
        for message_type in self._unhandled_types(now):
            count += sum(
                1
                for _, message_id, version in self._ready.get(message_type, ())
                if (e := self._entries.get(message_id)) is not None and e.version == version
            )
        return count

    async def inspect(self) -> QueueSnapshot:
        self._check_open()
        self._trim_dead()
        return QueueSnapshot(
            waiting={p: self._waiting[p] for p in range(4)},
            processing=self._processing,
            dead=len(self._dead),
            unhandled=self._unhandled_count(),
            counters={k: self._counts[k] for k in COUNTER_NAMES},
            cancelled=self._counts["cancelled"],
            delayed=self._delayed_count,
            workers=self._live_workers(_now_ms()),
            oldest_age=self._oldest_age(_now_ms()),
        )

    def _oldest_age(self, now: float) -> float:
        """Seconds since the longest-waiting ready message became ready (or a due delayed
        one came due), 0.0 for none: a scan of the heaps, as ``_unhandled_count`` does."""
        since = now
        for heap in self._ready.values():
            for _, message_id, version in heap:
                entry = self._entries.get(message_id)
                if entry is not None and entry.version == version:
                    since = min(since, entry.ready_at)
        for delayed in self._delayed.values():
            for due, _, message_id, version in delayed:
                entry = self._entries.get(message_id)
                if due <= now and entry is not None and entry.version == version:
                    since = min(since, due)
        return max(0.0, now - since) / 1000.0

    async def dead_letters(self, limit: int) -> list[DeadRecord]:
        self._check_open()
        self._trim_dead()
        return list(itertools.islice(self._dead.values(), max(0, limit)))

    async def maintain(self, request: Maintenance) -> int:
        self._check_open()
        action = request.action
        if action == "requeue_dead":
            return self._requeue_dead(request.limit, request.message_type)
        if action == "purge_waiting":
            return self._purge_waiting(request.limit)
        if action == "purge_dead":
            self._trim_dead()
            doomed = list(self._dead)
            if request.limit > 0:
                doomed = doomed[: request.limit]
            for dead_id in doomed:
                del self._dead[dead_id]
            return len(doomed)
        if action == "sweep_unhandled":
            return self._sweep_unhandled(
                request.unhandled_timeout_ms, request.limit, request.reason
            )
        raise ValidationError("action", action, "not a maintenance action")

    def _requeue_dead(self, max_count: int, message_type: str | None) -> int:
        self._trim_dead()
        now = _now_ms()
        moved = 0
        records = (
            r for r in self._dead.values() if message_type is None or r.type == message_type
        )
        for record in list(itertools.islice(records, max(0, max_count))):
            del self._dead[record.id]
            priority = record.priority
            entry = _Entry(
                id=record.id,
                type=record.type,
                priority=priority,
                body=record.body,
                score=self._score(priority),
                dedup_key=None,
                state=_State.READY,
            )
            self._entries[entry.id] = entry
            self._make_ready(entry, now)
            self._waiting[priority] += 1
            moved += 1
        if moved:
            self._signal()
        return moved

    def _purge_waiting(self, limit: int) -> int:
        removed = 0
        for entry in list(self._entries.values()):
            if 0 < limit <= removed:
                break
            if entry.state in (_State.READY, _State.DELAYED):
                self._unwait(entry)
                self._forget(entry)
                removed += 1
        return removed

    def _unwait(self, entry: _Entry) -> None:
        """A waiting entry leaves the waiting counts (it is being removed)."""
        self._waiting[entry.priority] -= 1
        self._delayed_count -= entry.state is _State.DELAYED

    def schedule_store(self) -> ScheduleStore:
        """This queue's schedules (capability ``schedules``), made on first use."""
        if self._schedules is None:
            from meetq.backends.memory._schedules import MemorySchedules

            self._schedules = MemorySchedules(self)
        return self._schedules

    def _check_open(self) -> None:
        # The same rule as every backend: a closed backend refuses every call.
        if self._closed:
            raise ClosedError(f"work queue {self.name!r}: its backend was closed")

    async def aclose(self) -> None:
        """Refuse every later call (``ClosedError``); the backend's ``aclose`` calls it."""
        self._closed = True
        self._listeners.clear()
