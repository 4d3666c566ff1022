"""``TaskScheduler`` semantics: priority, time, timeout, retry, cancel, stop.

The scheduler is in-process and touches no backend, so nothing here can differ between
backends: these tests run once, here, not per backend in the shipped contract suite
(they were ``meetq.testing.TaskSchedulerContract`` until the suite was re-scoped).

Tests wait on events and on ``scheduler.wait``; time is asserted only as a lower bound.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
import pytest_asyncio

from meetq import Task, TaskScheduler, TaskStatus
from meetq.core.config import MeetqConfig, load_config
from meetq.core.errors import ClosedError, QueueFull, ValidationError
from meetq.core.types import Priority
from meetq.testing import eventually

TIMEOUT = 5.0
BACKOFF = 0.01
# Loop clock and wall clock are read at slightly different instants; a delayed task's
# lower bound is asserted with this much slack (far below the delays used).
CLOCK_SLACK = 0.002
SchedulerFactory = Callable[..., TaskScheduler]


class Gate:
    """An async handler that records its start, then waits until the test opens it."""

    def __init__(self, result: Any = None) -> None:
        self.started = asyncio.Event()
        self.opened = asyncio.Event()
        self.cancelled = False
        self.result = result

    async def __call__(self, task: Task) -> Any:
        self.started.set()
        try:
            await self.opened.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return self.result


def order_recorder() -> tuple[list[Any], Callable[[Task], Any]]:
    """A list and an async handler appending ``task.payload["n"]`` to it."""
    seen: list[Any] = []

    async def record(task: Task) -> Any:
        seen.append(task.payload["n"])
        return task.payload["n"]

    return seen, record


async def never_called(task: Task) -> None:
    raise AssertionError(f"task {task.id} should not have run")


class TestTaskScheduler:
    """In-process task semantics: priority, time, timeout, retry, cancel, stop."""

    @pytest.fixture
    def meetq_config(self) -> MeetqConfig:
        """The default config: the scheduler reads only its own section."""
        return load_config({})

    @pytest_asyncio.fixture
    async def make_scheduler(self, meetq_config: MeetqConfig) -> AsyncIterator[SchedulerFactory]:
        """Build schedulers from the default ``task_scheduler`` config plus overrides.

        Every keyword is a ``task_scheduler`` key laid over the section (``workers=1``).
        Retries back off 10 ms without jitter unless overridden.
        """
        made: list[TaskScheduler] = []

        def make(**overrides: Any) -> TaskScheduler:
            options: dict[str, Any] = {"retry_backoff_base": BACKOFF, "retry_jitter": 0.0}
            options.update(overrides)
            scheduler = TaskScheduler.from_config(meetq_config.task_scheduler, **options)
            made.append(scheduler)
            return scheduler

        try:
            yield make
        finally:
            for scheduler in made:
                await scheduler.stop(grace=1.0)

    async def test_scheduler_strict_priority(self, make_scheduler: SchedulerFactory) -> None:
        scheduler = make_scheduler(workers=1)
        seen, record = order_recorder()
        ids = [
            scheduler.submit_task(Task(type="p", handler=record, payload={"n": p.name}, priority=p))
            for p in (Priority.LOW, Priority.NORMAL, Priority.CRITICAL, Priority.HIGH)
        ]
        assert scheduler.stats()["pending"] == 4
        assert all(scheduler.status(i) is TaskStatus.PENDING for i in ids)
        await scheduler.start()
        for task_id in ids:
            assert (await scheduler.wait(task_id, TIMEOUT)).status is TaskStatus.COMPLETED
        assert seen == ["CRITICAL", "HIGH", "NORMAL", "LOW"]

    async def test_scheduler_fifo_within_priority(self, make_scheduler: SchedulerFactory) -> None:
        scheduler = make_scheduler(workers=1)
        seen, record = order_recorder()
        ids = []
        for n in range(12):
            priority = (Priority.HIGH, Priority.LOW, Priority.HIGH)[n % 3]
            ids.append(
                scheduler.submit_task(
                    Task(type="f", handler=record, payload={"n": n}, priority=priority)
                )
            )
        await scheduler.start()
        for task_id in ids:
            await scheduler.wait(task_id, TIMEOUT)
        high = [n for n in range(12) if n % 3 != 1]
        low = [n for n in range(12) if n % 3 == 1]
        assert seen == high + low

    async def test_scheduler_runs_at_most_workers_at_once(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        scheduler = make_scheduler(workers=3)
        gates = [Gate(result=n) for n in range(5)]
        await scheduler.start()
        ids = [scheduler.submit_task(Task(type="w", handler=g)) for g in gates]
        await asyncio.wait_for(asyncio.gather(*(g.started.wait() for g in gates[:3])), TIMEOUT)
        stats = scheduler.stats()
        assert stats["running"] == 3 and stats["pending"] == 2
        assert not gates[3].started.is_set() and not gates[4].started.is_set()
        for gate in gates:
            gate.opened.set()
        results = [(await scheduler.wait(i, TIMEOUT)).result for i in ids]
        assert results == [0, 1, 2, 3, 4]

    async def test_scheduler_delayed_task_waits_for_its_time(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        scheduler = make_scheduler()
        loop = asyncio.get_running_loop()
        ran: dict[str, float] = {}

        async def note(task: Task) -> None:
            ran[task.type] = loop.time()

        await scheduler.start()
        start = loop.time()
        now = time.time()
        late = scheduler.submit_task(Task(type="late", handler=note, scheduled_at=now + 0.12))
        early = scheduler.submit_task(Task(type="early", handler=note, scheduled_at=now + 0.06))
        at_once = scheduler.submit_task(Task(type="now", handler=note))
        past = scheduler.submit_task(Task(type="past", handler=note, scheduled_at=now - 10))
        assert scheduler.status(late) is TaskStatus.SCHEDULED
        assert scheduler.status(early) is TaskStatus.SCHEDULED
        assert scheduler.stats()["scheduled"] == 2
        for task_id in (at_once, past, early, late):
            snapshot = await scheduler.wait(task_id, TIMEOUT)
            assert snapshot.status is TaskStatus.COMPLETED
        assert ran["early"] >= start + 0.06 - CLOCK_SLACK
        assert ran["late"] >= start + 0.12 - CLOCK_SLACK
        assert ran["now"] < ran["early"] < ran["late"]
        assert ran["past"] < ran["early"]
        kept = scheduler.get_task(early)
        assert kept is not None and kept.scheduled_at == pytest.approx(now + 0.06)
        assert kept.started_at is not None and kept.started_at >= now + 0.06 - CLOCK_SLACK

    async def test_scheduler_scheduled_at_accepts_datetimes(self) -> None:
        aware = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert Task(type="d", handler=never_called, scheduled_at=aware).scheduled_at == (
            aware.timestamp()
        )
        naive = datetime(2030, 1, 2, 3, 4, 5)  # local time, as Python reads it
        assert Task(type="d", handler=never_called, scheduled_at=naive).scheduled_at == (
            naive.timestamp()
        )
        assert Task(type="d", handler=never_called, scheduled_at=1700000000).scheduled_at == (
            1700000000.0
        )

    async def test_scheduler_timeout_then_retry(self, make_scheduler: SchedulerFactory) -> None:
        scheduler = make_scheduler()
        attempts = 0
        forever = asyncio.Event()
        interrupted = asyncio.Event()

        async def slow_once(task: Task) -> str:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                try:
                    await forever.wait()
                except asyncio.CancelledError:
                    interrupted.set()
                    raise
            return "second time lucky"

        await scheduler.start()
        task_id = scheduler.submit_task(
            Task(type="t", handler=slow_once, timeout=0.05, max_retries=1)
        )
        snapshot = await scheduler.wait(task_id, TIMEOUT)
        assert interrupted.is_set()  # the first attempt was really cancelled
        assert snapshot.status is TaskStatus.COMPLETED
        assert snapshot.result == "second time lucky"
        assert snapshot.attempts == 2
        assert snapshot.error is not None and "0.05s" in snapshot.error
        stats = scheduler.stats()
        assert stats["total_retried"] == 1 and stats["total_completed"] == 1
        assert stats["total_timed_out"] == 0

    async def test_scheduler_timeout_without_retries_is_final(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        scheduler = make_scheduler()
        gate = Gate()
        await scheduler.start()
        task_id = scheduler.submit_task(Task(type="t", handler=gate, timeout="50ms"))
        snapshot = await scheduler.wait(task_id, TIMEOUT)
        assert snapshot.status is TaskStatus.TIMED_OUT and snapshot.done
        assert gate.cancelled and snapshot.attempts == 1
        assert snapshot.error is not None and "did not finish within 0.05s" in snapshot.error
        assert scheduler.stats()["total_timed_out"] == 1

    async def test_scheduler_retries_with_backoff_then_fails(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        scheduler = make_scheduler(retry_backoff_base=0.02)
        loop = asyncio.get_running_loop()
        starts: list[float] = []
        statuses: list[TaskStatus | None] = []

        async def always_fails(task: Task) -> None:
            statuses.append(scheduler.status(task.id))
            starts.append(loop.time())
            raise RuntimeError(f"boom #{len(starts)}")

        await scheduler.start()
        task_id = scheduler.submit_task(Task(type="r", handler=always_fails, max_retries=2))
        snapshot = await scheduler.wait(task_id, TIMEOUT)
        assert snapshot.status is TaskStatus.FAILED
        assert snapshot.attempts == 3 and len(starts) == 3
        assert snapshot.error == "RuntimeError: boom #3"
        # Exponential backoff: 20 ms, then 40 ms (no jitter in this suite).
        assert starts[1] - starts[0] >= 0.02
        assert starts[2] - starts[1] >= 0.04
        assert statuses == [TaskStatus.RUNNING] * 3
        stats = scheduler.stats()
        assert stats["total_retried"] == 2 and stats["total_failed"] == 1
        assert stats["total_completed"] == 0

    async def test_scheduler_retrying_status_between_attempts(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        scheduler = make_scheduler(retry_backoff_base=60.0)
        failed = asyncio.Event()

        async def fails(task: Task) -> None:
            failed.set()
            raise ValueError("no")

        await scheduler.start()
        task_id = scheduler.submit_task(Task(type="r", handler=fails, max_retries=1))
        await asyncio.wait_for(failed.wait(), TIMEOUT)
        await eventually(lambda: scheduler.status(task_id) is TaskStatus.RETRYING, TIMEOUT)
        assert scheduler.stats()["scheduled"] == 1
        assert scheduler.cancel_task(task_id) is True
        snapshot = await scheduler.wait(task_id, TIMEOUT)
        assert snapshot.status is TaskStatus.CANCELLED
        assert snapshot.attempts == 1 and snapshot.error == "ValueError: no"

    async def test_scheduler_success_after_retries(self, make_scheduler: SchedulerFactory) -> None:
        scheduler = make_scheduler()
        calls = 0

        async def third_time(task: Task) -> int:
            nonlocal calls
            calls += 1
            if calls < 3:
                raise ConnectionError("flaky")
            return 42

        async with scheduler:
            task_id = scheduler.submit_task(Task(type="s", handler=third_time, max_retries=5))
            snapshot = await scheduler.wait(task_id, TIMEOUT)
        assert snapshot.status is TaskStatus.COMPLETED
        assert snapshot.result == 42 and snapshot.attempts == 3
        assert snapshot.error == "ConnectionError: flaky"
        assert snapshot.finished_at is not None and snapshot.finished_at >= snapshot.submitted_at
        assert scheduler.stats()["total_retried"] == 2

    async def test_scheduler_cancel_pending_scheduled_and_running(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        scheduler = make_scheduler(workers=1)
        gate = Gate()
        await scheduler.start()
        running = scheduler.submit_task(Task(type="c", handler=gate))
        await asyncio.wait_for(gate.started.wait(), TIMEOUT)
        pending = scheduler.submit_task(Task(type="c", handler=never_called))
        later = scheduler.submit_task(
            Task(type="c", handler=never_called, scheduled_at=time.time() + 60)
        )
        assert scheduler.status(pending) is TaskStatus.PENDING
        assert scheduler.status(later) is TaskStatus.SCHEDULED

        assert scheduler.cancel_task(pending) is True
        assert scheduler.status(pending) is TaskStatus.CANCELLED
        assert scheduler.cancel_task(later) is True
        assert scheduler.status(later) is TaskStatus.CANCELLED
        assert scheduler.cancel_task(running) is True
        snapshot = await scheduler.wait(running, TIMEOUT)
        assert snapshot.status is TaskStatus.CANCELLED and gate.cancelled

        assert scheduler.cancel_task(running) is False  # already final
        assert scheduler.cancel_task("no-such-task") is False
        stats = scheduler.stats()
        assert stats["total_cancelled"] == 3
        assert stats["pending"] == stats["scheduled"] == stats["running"] == 0
        # The worker slot is free again.
        seen, record = order_recorder()
        after = scheduler.submit_task(Task(type="c", handler=record, payload={"n": 1}))
        assert (await scheduler.wait(after, TIMEOUT)).status is TaskStatus.COMPLETED
        assert seen == [1]

    async def test_scheduler_queue_full_at_buffer_size(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        scheduler = make_scheduler(buffer_size=3)
        assert scheduler.stats()["buffer_size"] == 3
        seen, record = order_recorder()
        ids = [
            scheduler.submit_task(Task(type="q", handler=record, payload={"n": 0})),
            scheduler.submit_task(Task(type="q", handler=record, payload={"n": 1})),
            scheduler.submit_task(
                Task(type="q", handler=record, payload={"n": 2}, scheduled_at=time.time() + 0.01)
            ),
        ]
        with pytest.raises(QueueFull) as info:
            scheduler.submit_task(Task(type="q", handler=record, payload={"n": 3}))
        assert info.value.capacity == 3
        assert scheduler.stats()["total_submitted"] == 3
        await scheduler.start()
        for task_id in ids:
            await scheduler.wait(task_id, TIMEOUT)
        again = scheduler.submit_task(Task(type="q", handler=record, payload={"n": 4}))
        await scheduler.wait(again, TIMEOUT)
        assert sorted(seen) == [0, 1, 2, 4]

    async def test_scheduler_closed_after_stop(self, make_scheduler: SchedulerFactory) -> None:
        scheduler = make_scheduler()
        await scheduler.start()
        await scheduler.stop()
        with pytest.raises(ClosedError):
            scheduler.submit_task(Task(type="x", handler=never_called))
        with pytest.raises(ClosedError):
            await scheduler.start()
        await scheduler.stop()  # idempotent
        assert scheduler.stats()["total_submitted"] == 0

    async def test_scheduler_delayed_tasks_can_be_disabled(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        scheduler = make_scheduler(enable_delayed_tasks=False)
        with pytest.raises(ValidationError) as info:
            scheduler.submit_task(
                Task(type="d", handler=never_called, scheduled_at=time.time() + 1)
            )
        assert info.value.field == "scheduled_at"
        assert "enable_delayed_tasks" in str(info.value)
        # Retries still back off through the time heap.
        calls = 0

        async def fails_once(task: Task) -> str:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("once")
            return "ok"

        await scheduler.start()
        task_id = scheduler.submit_task(Task(type="d", handler=fails_once, max_retries=1))
        snapshot = await scheduler.wait(task_id, TIMEOUT)
        assert snapshot.status is TaskStatus.COMPLETED and snapshot.attempts == 2
        assert scheduler.stats()["total_submitted"] == 1

    async def test_scheduler_plain_handler_runs_in_a_thread(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        scheduler = make_scheduler()
        loop_thread = threading.get_ident()

        def blocking(task: Task) -> int:
            return threading.get_ident()

        await scheduler.start()
        task_id = scheduler.submit_task(Task(type="b", handler=blocking))
        snapshot = await scheduler.wait(task_id, TIMEOUT)
        assert snapshot.status is TaskStatus.COMPLETED
        assert isinstance(snapshot.result, int) and snapshot.result != loop_thread

    async def test_scheduler_handler_exception_is_contained(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        scheduler = make_scheduler(workers=1)
        seen, record = order_recorder()

        async def broken(task: Task) -> None:
            raise KeyError("bug")

        def broken_plain(task: Task) -> None:
            raise ZeroDivisionError("plain bug")

        first = scheduler.submit_task(Task(type="e", handler=broken))
        second = scheduler.submit_task(Task(type="e", handler=broken_plain))
        third = scheduler.submit_task(Task(type="e", handler=record, payload={"n": 3}))
        await scheduler.start()
        one = await scheduler.wait(first, TIMEOUT)
        two = await scheduler.wait(second, TIMEOUT)
        three = await scheduler.wait(third, TIMEOUT)
        assert one.status is TaskStatus.FAILED and one.error == "KeyError: 'bug'"
        assert two.status is TaskStatus.FAILED and two.error == "ZeroDivisionError: plain bug"
        assert three.status is TaskStatus.COMPLETED and seen == [3]
        stats = scheduler.stats()
        assert stats["total_failed"] == 2 and stats["total_completed"] == 1

    async def test_scheduler_stop_drains_within_grace(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        scheduler = make_scheduler(workers=2)
        finishing, stuck = Gate(result="drained"), Gate()
        await scheduler.start()
        a = scheduler.submit_task(Task(type="s", handler=finishing))
        b = scheduler.submit_task(Task(type="s", handler=stuck))
        c = scheduler.submit_task(Task(type="s", handler=never_called))
        d = scheduler.submit_task(
            Task(type="s", handler=never_called, scheduled_at=time.time() + 60)
        )
        await asyncio.wait_for(
            asyncio.gather(finishing.started.wait(), stuck.started.wait()), TIMEOUT
        )
        stopping = asyncio.create_task(scheduler.stop(grace=0.3))
        await eventually(lambda: scheduler.status(c) is TaskStatus.CANCELLED, TIMEOUT)
        assert scheduler.status(d) is TaskStatus.CANCELLED  # waiting tasks: cancelled at once
        with pytest.raises(ClosedError):
            scheduler.submit_task(Task(type="s", handler=never_called))
        finishing.opened.set()  # a running task may still finish within the grace
        await asyncio.wait_for(stopping, TIMEOUT)
        done = scheduler.get_task(a)
        assert done is not None and done.status is TaskStatus.COMPLETED
        assert done.result == "drained"
        abandoned = scheduler.get_task(b)
        assert abandoned is not None and abandoned.status is TaskStatus.CANCELLED
        assert stuck.cancelled
        stats = scheduler.stats()
        assert stats["running"] == stats["pending"] == stats["scheduled"] == 0
        assert stats["total_cancelled"] == 3 and stats["total_completed"] == 1

    async def test_scheduler_stop_from_inside_a_handler(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        scheduler = make_scheduler(workers=2)
        other = Gate(result="other")
        stop_returned = asyncio.Event()

        async def stopper(task: Task) -> str:
            other.opened.set()  # the other running task finishes within the grace
            await scheduler.stop(grace=TIMEOUT)
            stop_returned.set()
            return "stopped from inside"

        await scheduler.start()
        first = scheduler.submit_task(Task(type="i", handler=other))
        await asyncio.wait_for(other.started.wait(), TIMEOUT)
        second = scheduler.submit_task(Task(type="i", handler=stopper))
        snapshot = await scheduler.wait(second, TIMEOUT)
        assert stop_returned.is_set()
        assert snapshot.status is TaskStatus.COMPLETED
        assert snapshot.result == "stopped from inside"
        assert (await scheduler.wait(first, TIMEOUT)).status is TaskStatus.COMPLETED
        with pytest.raises(ClosedError):
            scheduler.submit_task(Task(type="i", handler=never_called))
        await asyncio.wait_for(scheduler.stop(), TIMEOUT)  # outside too: returns at once

    async def test_scheduler_no_leftover_asyncio_tasks_after_stop(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        before = asyncio.all_tasks()
        scheduler = make_scheduler(workers=4)
        gates = [Gate() for _ in range(4)]
        await scheduler.start()
        for gate in gates:
            scheduler.submit_task(Task(type="l", handler=gate))
        scheduler.submit_task(Task(type="l", handler=never_called, scheduled_at=time.time() + 60))
        scheduler.submit_task(Task(type="l", handler=never_called))
        await asyncio.wait_for(asyncio.gather(*(g.started.wait() for g in gates)), TIMEOUT)
        gates[0].opened.set()
        await scheduler.stop(grace=0.05)
        leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
        assert leftover == set()
        assert all(g.cancelled for g in gates[1:])
        assert scheduler.stats()["running"] == 0

    async def test_scheduler_stats_keys(self, make_scheduler: SchedulerFactory) -> None:
        scheduler = make_scheduler(workers=2, buffer_size=50)
        _, record = order_recorder()
        async with scheduler:
            task_id = scheduler.submit_task(Task(type="k", handler=record, payload={"n": 1}))
            await scheduler.wait(task_id, TIMEOUT)
            stats = scheduler.stats()
        assert set(stats) >= {
            "total_submitted",
            "total_completed",
            "total_failed",
            "total_retried",
            "total_cancelled",
            "total_timed_out",
            "pending",
            "scheduled",
            "running",
            "workers",
            "buffer_size",
        }
        assert stats["total_submitted"] == stats["total_completed"] == 1
        assert stats["workers"] == 2 and stats["buffer_size"] == 50
        assert all(isinstance(v, int) for v in stats.values())

    async def test_scheduler_validation_names_the_field(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        bad_tasks: list[tuple[dict[str, Any], str]] = [
            ({"type": ""}, "type"),
            ({"handler": "not callable"}, "handler"),
            ({"payload": {7: "x"}}, "payload[7]"),
            ({"priority": "urgent"}, "priority"),
            ({"timeout": -1}, "timeout"),
            ({"timeout": "soon"}, "timeout"),
            ({"max_retries": -1}, "max_retries"),
            ({"max_retries": True}, "max_retries"),
            ({"scheduled_at": "tomorrow"}, "scheduled_at"),
            ({"scheduled_at": float("nan")}, "scheduled_at"),
            ({"id": ""}, "id"),
        ]
        for change, field in bad_tasks:
            fields: dict[str, Any] = {"type": "v", "handler": never_called, **change}
            with pytest.raises(ValidationError) as info:
                Task(**fields)
            assert info.value.field == field, change
            # The message names the field and shows the value (for payload: the bad key).
            shown = next(iter(change.values()))
            shown = 7 if field == "payload[7]" else shown
            assert str(info.value).startswith(f"{field}={shown!r}"), str(info.value)
        scheduler = make_scheduler()
        with pytest.raises(ValidationError) as not_a_task:
            scheduler.submit_task({"type": "v"})  # type: ignore[arg-type]
        assert not_a_task.value.field == "task"
        gate = Gate()
        task = Task(type="v", handler=gate)
        scheduler.submit_task(task)
        with pytest.raises(ValidationError) as duplicate:
            scheduler.submit_task(task)
        assert duplicate.value.field == "id" and duplicate.value.value == task.id
        with pytest.raises(ValidationError) as unknown:
            await scheduler.wait("no-such-task")
        assert unknown.value.field == "task_id"
        with pytest.raises(ValidationError) as workers:
            TaskScheduler(workers=0)
        assert workers.value.field == "workers"
        with pytest.raises(ValidationError) as backoff:
            TaskScheduler(retry_backoff_base=-1)
        assert backoff.value.field == "retry_backoff_base"
        assert scheduler.stats()["total_submitted"] == 1

    async def test_scheduler_wait_timeout_leaves_task_alone(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        scheduler = make_scheduler()
        gate = Gate(result="fine")
        await scheduler.start()
        task_id = scheduler.submit_task(Task(type="w", handler=gate))
        await asyncio.wait_for(gate.started.wait(), TIMEOUT)
        with pytest.raises(TimeoutError):
            await scheduler.wait(task_id, timeout=0.01)
        assert scheduler.status(task_id) is TaskStatus.RUNNING
        gate.opened.set()
        snapshot = await scheduler.wait(task_id, TIMEOUT)
        assert snapshot.status is TaskStatus.COMPLETED and snapshot.result == "fine"
        assert await scheduler.wait(task_id) == snapshot  # a final task answers at once

    async def test_scheduler_keeps_a_bounded_history(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        scheduler = make_scheduler(keep_finished=3, workers=1)
        seen, record = order_recorder()
        ids = [
            scheduler.submit_task(Task(type="h", handler=record, payload={"n": n}))
            for n in range(6)
        ]
        await scheduler.start()
        await eventually(lambda: len(seen) == 6, TIMEOUT)
        await eventually(lambda: scheduler.stats()["total_completed"] == 6, TIMEOUT)
        assert [scheduler.get_task(i) for i in ids[:3]] == [None, None, None]
        kept = [scheduler.get_task(i) for i in ids[3:]]
        assert [s.result for s in kept if s is not None] == [3, 4, 5]
        assert scheduler.status(ids[0]) is None

    async def test_scheduler_sized_from_config(self, meetq_config: MeetqConfig) -> None:
        config = attrs.evolve(meetq_config.task_scheduler, buffer_size=77, workers=3)
        scheduler = TaskScheduler.from_config(config)
        stats = scheduler.stats()
        assert stats["buffer_size"] == 77 and stats["workers"] == 3
        await scheduler.stop()

    async def test_scheduler_cancel_after_the_attempt_returned_keeps_its_result(
        self, make_scheduler: SchedulerFactory
    ) -> None:
        scheduler = make_scheduler(workers=2)
        await scheduler.start()
        effects: list[str] = []

        async def pay(task: Task) -> str:
            effects.append("charged")
            return "ok"

        task_id = scheduler.submit_task(Task(type="pay", handler=pay))
        runner = scheduler._entries[task_id].runner
        await asyncio.sleep(0)  # one step: the attempt returns; settling is still queued
        if runner is not None and runner.done():
            assert scheduler.cancel_task(task_id) is False
        snapshot = await scheduler.wait(task_id, timeout=5)
        assert snapshot.status is TaskStatus.COMPLETED and snapshot.result == "ok"
        assert effects == ["charged"]
