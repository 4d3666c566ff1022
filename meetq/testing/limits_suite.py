"""Contract tests for rate and concurrency limits per message type (``CAP_LIMITS``).

A limit is applied inside the backend's claim (``WorkQueueBackend.exchange``), so the
first half stages claims on the primitive itself, where every count is exact; the
second half runs ``MessageQueue`` workers — several on one backend object, and on
backends declaring ``cross_process`` one backend object each, as separate processes
would (hand-offs included). Bounds on a rate are the token bucket's own: in any span
``d`` of the backend's clock at most ``burst + rate * d`` starts, and the test's
monotonic clock, read around the calls, brackets the backend's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_asyncio

from meetq import MessageQueue
from meetq.core._limits import TypeLimit
from meetq.core.protocols import (
    CAP_CROSS_PROCESS,
    CAP_LIMITS,
    Backend,
    LeaseRef,
    Settlement,
    StoredMessage,
    WorkQueueBackend,
    WorkQueueOptions,
)
from meetq.core.types import Message, Priority
from meetq.testing._base import BackendContract
from meetq.testing._helpers import QUICK, TIMEOUT, eventually
from meetq.testing._marks import requires

__all__ = ["LimitsContract"]

# A rate so slow that no token comes back during a test: the burst is all there is.
_HOURLY = 1 / 3_600_000


def _stored(ids: list[str], message_type: str, priority: int = 1) -> list[StoredMessage]:
    return [StoredMessage(id=i, type=message_type, priority=priority, body=b"{}") for i in ids]


def _ack(claimed: Any) -> Settlement:
    return Settlement(
        lease=LeaseRef(id=claimed.id, type=claimed.type, token=claimed.token), outcome="ack"
    )


async def _processed(mq: MessageQueue, n: int) -> bool:
    """``n`` settled as processed queue-wide, and none failed (for ``eventually``)."""
    stats = await mq.stats()
    assert stats["total_failed"] == 0
    return bool(stats["total_processed"] == n)


def _raw(backend: Backend, name: str, *limits: TypeLimit) -> WorkQueueBackend:
    return backend.work_queue(name, WorkQueueOptions(limits=limits))


class _Running:
    """Counts handlers running at once (the most seen) and when each one started."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.starts: list[float] = []
        self.done = 0

    async def __call__(self, message: Message) -> None:
        self.starts.append(time.monotonic())
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            # Long enough for the other workers to try to start one more.
            await asyncio.sleep(0.02)
        finally:
            self.now -= 1
            self.done += 1


class LimitsContract(BackendContract):
    """Rate and concurrency limits: held at the claim, across every worker.

    Each test carries ``requires(CAP_LIMITS)`` itself: a mark on the class would be
    inherited by every class the suite is mixed into."""

    @pytest_asyncio.fixture
    async def workers(
        self, backend: Backend, make_backend: Callable[..., Backend]
    ) -> AsyncIterator[Callable[..., MessageQueue]]:
        made: list[MessageQueue] = []

        def make(*, own_backend: bool = False, **overrides: Any) -> MessageQueue:
            # own_backend: a backend object of its own, as another process would have.
            mq = MessageQueue(
                make_backend() if own_backend else backend,
                **{**QUICK, "queue_name": "q", **overrides},
            )
            made.append(mq)
            return mq

        yield make
        for mq in made:
            await mq.stop(grace=0)

    # -- the claim -----------------------------------------------------------------------

    @requires(CAP_LIMITS)
    async def test_a_concurrency_limit_caps_leases_and_a_settlement_frees_a_slot(
        self, backend: Backend
    ) -> None:
        raw = _raw(backend, "conc", TypeLimit(type="job", concurrency=2))
        await raw.enqueue(_stored([f"j{i}" for i in range(5)], "job"))
        first = await raw.exchange([], types=["job"], claim=10, lease_ms=5000)
        assert [c.id for c in first.claimed] == ["j0", "j1"]
        again = await raw.exchange([], types=["job"], claim=10, lease_ms=5000)
        assert again.claimed == [] and again.retry_after_ms == 0  # a settlement frees it
        freed = await raw.exchange([_ack(first.claimed[0])], types=["job"], claim=10, lease_ms=5000)
        assert freed.settled == [True]
        assert [(c.id, c.attempt) for c in freed.claimed] == [("j2", 1)]
        snapshot = await raw.inspect()
        assert snapshot.processing == 2 and sum(snapshot.waiting.values()) == 2
        assert snapshot.counters["failed"] == 0 and snapshot.counters["retried"] == 0

    @requires(CAP_LIMITS)
    async def test_a_rate_limit_grants_its_burst_then_says_when_the_next_token_comes(
        self, backend: Backend
    ) -> None:
        raw = _raw(
            backend, "rate", TypeLimit(type="mail", rate_per_ms=_HOURLY, burst=3, bucket=3.0)
        )
        await raw.enqueue(_stored([f"m{i}" for i in range(5)], "mail"))
        await raw.enqueue(_stored([f"o{i}" for i in range(2)], "other"))
        got = await raw.exchange([], types=["mail"], claim=10, lease_ms=5000)
        assert [c.id for c in got.claimed] == ["m0", "m1", "m2"]
        held = await raw.exchange([], types=["mail"], claim=10, lease_ms=5000)
        assert held.claimed == []
        # One token an hour: the next is due in (almost) an hour, on the backend's clock
        # (rounded up, from a rate in floating point: 1 ms over is not a slower rate).
        assert 3_500_000 < held.retry_after_ms <= 3_600_001
        # The limited type holds back nothing else.
        both = await raw.exchange([], types=["mail", "other"], claim=10, lease_ms=5000)
        assert [c.id for c in both.claimed] == ["o0", "o1"]
        assert 3_500_000 < both.retry_after_ms <= 3_600_001
        snapshot = await raw.inspect()
        assert sum(snapshot.waiting.values()) == 2 and snapshot.processing == 5

    @requires(CAP_LIMITS)
    async def test_held_back_messages_are_never_charged_an_attempt(
        self, backend: Backend
    ) -> None:
        raw = _raw(backend, "charge", TypeLimit(type="job", concurrency=1))
        await raw.enqueue(_stored(["a", "b"], "job"))
        [a] = (await raw.exchange([], types=["job"], claim=5, lease_ms=5000)).claimed
        for _ in range(5):  # every claim refused while a runs
            assert (await raw.exchange([], types=["job"], claim=5, lease_ms=5000)).claimed == []
        [b] = (await raw.exchange([_ack(a)], types=["job"], claim=5, lease_ms=5000)).claimed
        assert (b.id, b.attempt) == ("b", 1)
        snapshot = await raw.inspect()
        assert snapshot.counters["failed"] == 0 and snapshot.counters["dead_letter"] == 0

    @requires(CAP_LIMITS)
    async def test_strict_priority_holds_among_what_a_limit_lets_through(
        self, backend: Backend
    ) -> None:
        raw = _raw(backend, "prio", TypeLimit(type="a", concurrency=1))
        await raw.enqueue(_stored(["a1", "a2"], "a", int(Priority.HIGH)))
        await raw.enqueue(_stored(["b-normal"], "b", int(Priority.NORMAL)))
        await raw.enqueue(_stored(["b-critical"], "b", int(Priority.CRITICAL)))
        await raw.enqueue(_stored(["b-low"], "b", int(Priority.LOW)))
        got = await raw.exchange([], types=["a", "b"], claim=10, lease_ms=5000)
        # a2 stays: the limit lets one "a" through, in its place among the rest.
        assert [c.id for c in got.claimed] == ["b-critical", "a1", "b-normal", "b-low"]

    @requires(CAP_LIMITS)
    async def test_a_token_bucket_refills_at_its_rate_and_never_beyond(
        self, backend: Backend
    ) -> None:
        rate, burst = 0.02, 2  # 20 per second
        raw = _raw(
            backend, "refill", TypeLimit(type="t", rate_per_ms=rate, burst=burst, bucket=burst)
        )
        await raw.enqueue(_stored([f"t{i}" for i in range(8)], "t"))
        began = time.monotonic()
        taken = 0
        while taken < 8:
            got = await raw.exchange([], types=["t"], claim=10, lease_ms=5000)
            taken += len(got.claimed)
            # Every token the claims took so far was in the bucket or added since: at most
            # burst + rate * elapsed (2 ms for the backend clock's millisecond steps).
            assert taken <= burst + rate * ((time.monotonic() - began) * 1000 + 2)
            if not got.claimed:
                # The promised wait (and a clock step) brings a token.
                assert got.retry_after_ms > 0
                await asyncio.sleep(got.retry_after_ms / 1000 + 0.002)
                got = await raw.exchange([], types=["t"], claim=1, lease_ms=5000)
                assert len(got.claimed) == 1
                taken += 1

    @requires(CAP_LIMITS)
    async def test_a_settlement_freeing_a_slot_wakes_the_listeners(self, backend: Backend) -> None:
        raw = _raw(backend, "wake", TypeLimit(type="job", concurrency=1))
        calls = [0]

        def woke() -> None:
            calls[0] += 1

        stop = await raw.listen(woke)
        try:
            await raw.enqueue(_stored(["x", "y"], "job"))
            await eventually(lambda: calls[0] >= 1, TIMEOUT)
            [x] = (await raw.exchange([], types=["job"], claim=5, lease_ms=5000)).claimed
            before = calls[0]
            # Settled by a caller that claims nothing: only the wake-up tells the others.
            await raw.exchange([_ack(x)], types=["job"], claim=0, lease_ms=5000)
            await eventually(lambda: calls[0] > before, TIMEOUT)
        finally:
            stop()

    # -- workers ------------------------------------------------------------------------

    async def _concurrency_across(
        self, workers: Callable[..., MessageQueue], *, own_backend: bool
    ) -> None:
        running = _Running()
        queues = []
        for _ in range(3):
            mq = workers(own_backend=own_backend, workers=4, concurrency_limits={"job": 2})
            mq.register_handler("job", running)
            queues.append(mq)
        publisher = queues[0]
        await publisher.publish_batch([Message(type="job", payload={"i": i}) for i in range(20)])
        for mq in queues:
            await mq.start()
        await eventually(lambda: running.done == 20, 30)
        assert 1 <= running.most <= 2
        # A publish to an idle, parked worker is claimed, never handed past the limit.
        for i in range(6):
            await publisher.publish(Message(type="job", payload={"late": i}))
        await eventually(lambda: running.done == 26, 30)
        assert running.most <= 2
        await eventually(lambda: _processed(publisher, 26), TIMEOUT)  # settled, none failed

    @requires(CAP_LIMITS)
    async def test_a_concurrency_limit_holds_for_several_workers(
        self, workers: Callable[..., MessageQueue]
    ) -> None:
        await self._concurrency_across(workers, own_backend=False)

    @requires(CAP_LIMITS, CAP_CROSS_PROCESS)
    async def test_a_concurrency_limit_holds_for_workers_of_separate_backends(
        self, workers: Callable[..., MessageQueue]
    ) -> None:
        await self._concurrency_across(workers, own_backend=True)

    @requires(CAP_LIMITS)
    async def test_a_limited_type_does_not_hold_back_other_types(
        self, workers: Callable[..., MessageQueue]
    ) -> None:
        mq = workers(workers=4, concurrency_limits={"slow": 1})
        release = asyncio.Event()
        slow_started: list[str] = []
        fast_done: list[str] = []

        @mq.handler("slow")
        async def slow(message: Message) -> None:
            slow_started.append(message.id)
            await release.wait()

        @mq.handler("fast")
        async def fast(message: Message) -> None:
            fast_done.append(message.id)

        await mq.publish_batch([Message(type="slow") for _ in range(3)])
        await mq.publish_batch([Message(type="fast") for _ in range(5)])
        async with mq:
            await eventually(lambda: len(fast_done) == 5, TIMEOUT)
            assert len(slow_started) == 1  # two free slots, and still one "slow" at a time
            release.set()
            await eventually(lambda: len(slow_started) == 3, TIMEOUT)
            await eventually(lambda: _processed(mq, 8), TIMEOUT)

    @requires(CAP_LIMITS)
    async def test_a_rate_limited_worker_sleeps_until_the_next_token_not_a_poll(
        self, workers: Callable[..., MessageQueue]
    ) -> None:
        # poll_interval far beyond the test: only the backend's retry-after (or a
        # wake-up) can bring the next claim. 10 messages at 50/s, burst 1.
        mq = workers(workers=4, poll_interval="60s", rate_limits={"tick": "50/s"})
        running = _Running()
        mq.register_handler("tick", running)
        await mq.publish_batch([Message(type="tick") for _ in range(10)])
        began = time.monotonic()
        async with mq:
            await eventually(lambda: running.done == 10, 30)
            await eventually(lambda: _processed(mq, 10), TIMEOUT)
        # The bucket's bound on every prefix of the starts: the one token it starts with,
        # the half token of grace it may keep (meetq/core/_limits.py), 50 a second since.
        for n, started in enumerate(running.starts, 1):
            assert n <= 1 + 0.5 + 50 * (started - began + 0.002)

    @requires(CAP_LIMITS)
    async def test_limited_messages_all_run_with_no_poll_to_fall_back_on(
        self, workers: Callable[..., MessageQueue]
    ) -> None:
        # Two workers, one slot, poll_interval beyond the test: every message still runs
        # (the settling worker claims the freed slot, or a wake-up sends the other).
        release = asyncio.Event()
        seen: list[str] = []

        async def handler(message: Message) -> None:
            seen.append(message.id)
            if len(seen) == 1:
                await release.wait()

        queues = []
        for _ in range(2):
            mq = workers(workers=2, poll_interval="60s", concurrency_limits={"one": 1})
            mq.register_handler("one", handler)
            queues.append(mq)
        await queues[0].publish_batch([Message(type="one") for _ in range(4)])
        for mq in queues:
            await mq.start()
        await eventually(lambda: len(seen) == 1, TIMEOUT)
        release.set()
        await eventually(lambda: len(seen) == 4, TIMEOUT)
