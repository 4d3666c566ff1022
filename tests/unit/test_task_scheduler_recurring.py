"""``TaskScheduler.schedule_task``: recurring in-process tasks by ``cron=`` / ``every=``.

The fire times come from the same pure function as the queue's schedules (its DST and
zone rules are held in ``test_schedules.py``); here: each fire submits a fresh copy,
replacing and removing by name, bad input, and stop ending the timers.
"""

from __future__ import annotations

import time

import pytest

from meetq import Task, TaskScheduler
from meetq.core.errors import ClosedError, ValidationError
from meetq.testing import eventually


async def test_every_fire_submits_a_fresh_copy_of_the_task() -> None:
    seen: list[tuple[str, str]] = []

    async def handler(task: Task) -> None:
        seen.append((task.id, task.payload["k"]))

    async with TaskScheduler(100, 2) as scheduler:
        template = Task(type="tick", handler=handler, payload={"k": "v"})
        before = time.time()
        first = scheduler.schedule_task("tick", template, every="50ms")
        assert before + 0.05 - 0.001 <= first <= time.time() + 0.05 + 0.001
        assert scheduler.scheduled_tasks() == {"tick": first}
        await eventually(lambda: len(seen) >= 3)
        assert scheduler.unschedule_task("tick") is True
        assert scheduler.unschedule_task("tick") is False
        assert scheduler.scheduled_tasks() == {}
    ids = [task_id for task_id, _ in seen]
    assert len(set(ids)) == len(ids) and template.id not in ids
    assert {value for _, value in seen} == {"v"}


async def test_replacing_by_name_and_cron_in_a_zone() -> None:
    async def handler(task: Task) -> None:
        pass

    async with TaskScheduler(10, 1) as scheduler:
        task = Task(type="t", handler=handler)
        scheduler.schedule_task("job", task, every="1h")
        nightly = scheduler.schedule_task("job", task, cron="0 3 * * *", timezone="Asia/Tokyo")
        assert list(scheduler.scheduled_tasks()) == ["job"]
        assert scheduler.scheduled_tasks()["job"] == nightly
        # 03:00 in Tokyo is 18:00 UTC.
        assert time.gmtime(nightly).tm_hour == 18 and time.gmtime(nightly).tm_min == 0


async def test_bad_recurring_input_names_the_field() -> None:
    async def handler(task: Task) -> None:
        pass

    async with TaskScheduler(10, 1) as scheduler:
        task = Task(type="t", handler=handler)
        for kwargs, field in [
            ({"cron": "0 25 * * *"}, "cron"),
            ({"every": "0s"}, "every"),
            ({}, "cron"),
            ({"every": 1, "timezone": "Nowhere/Land"}, "timezone"),
        ]:
            with pytest.raises(ValidationError) as info:
                scheduler.schedule_task("job", task, **kwargs)
            assert info.value.field == field
        with pytest.raises(ValidationError) as info:
            scheduler.schedule_task("", task, every=1)
        assert info.value.field == "name"
        with pytest.raises(ValidationError) as info:
            scheduler.schedule_task("job", "task", every=1)  # type: ignore[arg-type]
        assert info.value.field == "task"
        assert scheduler.scheduled_tasks() == {}


async def test_stop_ends_the_recurring_timers() -> None:
    runs: list[str] = []

    async def handler(task: Task) -> None:
        runs.append(task.id)

    scheduler = TaskScheduler(10, 1)
    await scheduler.start()
    scheduler.schedule_task("fast", Task(type="t", handler=handler), every="20ms")
    await eventually(lambda: len(runs) >= 1)
    await scheduler.stop()
    assert scheduler.scheduled_tasks() == {}  # every timer cancelled
    with pytest.raises(ClosedError):
        scheduler.schedule_task("late", Task(type="t", handler=handler), every="20ms")
