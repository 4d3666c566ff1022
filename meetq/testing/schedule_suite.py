"""Contract tests for named schedules (``MessageQueue.schedule`` and ``ScheduleStore``).

Every test needs capability ``schedules`` (``requires(CAP_SCHEDULES)``): a backend that
does not declare it skips them, and its queues refuse ``schedule()`` with a
``BackendError``. Fire loops run on wall-clock time, so the tests that watch them use
short intervals and wait on conditions (the fired messages' own fire-time headers say
which fire time each one stands for); the compare-and-set itself is tested on the store.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest
import pytest_asyncio

from meetq import MessageQueue
from meetq.core.errors import ValidationError
from meetq.core.protocols import (
    CAP_SCHEDULES,
    Backend,
    ScheduleStore,
    StoredMessage,
    StoredSchedule,
    WorkQueueOptions,
)
from meetq.core.types import Message, Priority
from meetq.testing._base import BackendContract
from meetq.testing._helpers import QUICK, eventually
from meetq.testing._marks import requires

__all__ = ["ScheduleContract"]

MakeQueue = Callable[..., MessageQueue]
FIRE_TIME = "meetq-fire-time"


def _fire_ms(message: Message) -> int:
    return round(datetime.fromisoformat(message.headers[FIRE_TIME]).timestamp() * 1000)


def _store(backend: Backend) -> ScheduleStore:
    queue = backend.work_queue("q", WorkQueueOptions())
    store: ScheduleStore = queue.schedule_store()  # type: ignore[attr-defined]
    return store


def _stored(body: bytes = b"x") -> StoredMessage:
    return StoredMessage(id=f"m-{time.time_ns()}", type="tick", priority=1, body=body)


class ScheduleContract(BackendContract):
    """The schedule part of the contract suite; each test ``requires(CAP_SCHEDULES)``
    (marked one by one: a class mark would reach every class that binds the suite)."""

    @pytest_asyncio.fixture
    async def make_schedule_queue(self, backend: Backend) -> AsyncIterator[MakeQueue]:
        made: list[MessageQueue] = []

        def make(*, via: Backend | None = None, **overrides: Any) -> MessageQueue:
            mq = MessageQueue(via or backend, **{**QUICK, "queue_name": "q", **overrides})
            made.append(mq)
            return mq

        yield make
        for mq in made:
            await mq.stop(grace=0)

    # -- the calls ----------------------------------------------------------------------

    @requires(CAP_SCHEDULES)
    async def test_schedule_is_listed_with_its_next_fire_and_replaced_by_name(
        self, make_schedule_queue: MakeQueue
    ) -> None:
        mq = make_schedule_queue()
        before = time.time()
        info = await mq.schedule(
            "hourly", Message(type="tick", payload={"n": 1}, priority=Priority.HIGH), every="1h"
        )
        after = time.time()
        assert info.name == "hourly" and info.every == 3600.0 and info.cron is None
        assert before + 3600 - 0.001 <= info.next_fire_time <= after + 3600 + 0.001
        listed = await mq.schedules()
        assert [s.name for s in listed] == ["hourly"]
        assert listed[0].next_fire_time == info.next_fire_time
        assert listed[0].message is not None and listed[0].message.payload == {"n": 1}
        assert listed[0].message.priority is Priority.HIGH
        # Unchanged: stored again, it keeps its next fire time.
        again = await mq.schedule(
            "hourly", Message(type="tick", payload={"n": 1}, priority=Priority.HIGH), every="1h"
        )
        assert again.next_fire_time == info.next_fire_time
        # Changed: replaced, in Berlin's time.
        cron = await mq.schedule(
            "hourly", Message(type="tick"), cron="0 3 * * *", timezone="Europe/Berlin"
        )
        assert cron.cron == "0 3 * * *" and cron.every is None
        assert (cron.next_fire.hour, cron.next_fire.minute) == (3, 0)
        assert str(cron.next_fire.tzinfo) == "Europe/Berlin"
        assert [s.cron for s in await mq.schedules()] == ["0 3 * * *"]
        assert await mq.unschedule("hourly") is True
        assert await mq.unschedule("hourly") is False
        assert await mq.schedules() == []

    @requires(CAP_SCHEDULES)
    async def test_bad_schedule_input_names_the_field_and_stores_nothing(
        self, make_schedule_queue: MakeQueue
    ) -> None:
        mq = make_schedule_queue()
        tick = Message(type="tick")
        cases: list[tuple[dict[str, Any], str]] = [
            ({"cron": "61 * * * *"}, "cron"),
            ({"cron": "every day"}, "cron"),
            ({"every": "soon"}, "every"),
            ({"every": 0}, "every"),
            ({}, "cron"),
            ({"cron": "0 3 * * *", "every": 60}, "cron"),
            ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "timezone"),
            ({"every": 60, "misfire": "later"}, "misfire"),
            ({"every": 60, "misfire_grace": -1}, "misfire_grace"),
        ]
        for kwargs, field in cases:
            with pytest.raises(ValidationError) as info:
                await mq.schedule("s", tick, **kwargs)
            assert info.value.field == field, kwargs
        with pytest.raises(ValidationError) as info:
            await mq.schedule("s", {"type": "tick"}, every=60)  # type: ignore[arg-type]
        assert info.value.field == "message"
        with pytest.raises(ValidationError) as info:
            await mq.schedule("", tick, every=60)
        assert info.value.field == "name"
        with pytest.raises(ValidationError) as info:
            await mq.schedule("s", Message(type="tick", payload={"b": b"raw"}), every=60)
        assert info.value.field.startswith("message.payload")
        assert await mq.schedules() == []

    # -- the store: one fire step, a compare-and-set --------------------------------------

    @requires(CAP_SCHEDULES)
    async def test_fire_applies_only_with_the_stored_revision_and_next_fire(
        self, backend: Backend
    ) -> None:
        store = _store(backend)
        queue = backend.work_queue("q", WorkQueueOptions())
        first = StoredSchedule(name="s", definition=b"d1", revision="r1", next_fire_ms=1000)
        assert await store.put(first) == first
        assert not await store.fire(
            "s", revision="r0", expected_ms=1000, next_ms=2000, message=_stored()
        )
        assert not await store.fire(
            "s", revision="r1", expected_ms=999, next_ms=2000, message=_stored()
        )
        assert not await store.fire(
            "nope", revision="r1", expected_ms=1000, next_ms=2000, message=_stored()
        )
        assert (await queue.inspect()).counters["published"] == 0
        assert await store.fire(
            "s", revision="r1", expected_ms=1000, next_ms=2000, message=_stored(b"one")
        )
        assert (await queue.inspect()).counters["published"] == 1
        # The same step again finds it applied: nothing more is stored.
        assert not await store.fire(
            "s", revision="r1", expected_ms=1000, next_ms=2000, message=_stored()
        )
        # A skipped fire only moves the next fire time.
        assert await store.fire("s", revision="r1", expected_ms=2000, next_ms=3000, message=None)
        assert (await queue.inspect()).counters["published"] == 1
        assert [(s.name, s.next_fire_ms) for s in await store.list()] == [("s", 3000)]
        claimed = await queue.exchange([], types=["tick"], claim=10, lease_ms=10_000)
        assert [c.body for c in claimed.claimed] == [b"one"]

    @requires(CAP_SCHEDULES)
    async def test_put_keeps_an_unchanged_definition_and_replaces_a_changed_one(
        self, backend: Backend
    ) -> None:
        store = _store(backend)
        first = StoredSchedule(name="s", definition=b"d1", revision="r1", next_fire_ms=1000)
        await store.put(first)
        same = StoredSchedule(name="s", definition=b"d1", revision="r2", next_fire_ms=5000)
        assert await store.put(same) == first
        changed = StoredSchedule(name="s", definition=b"d2", revision="r3", next_fire_ms=7000)
        assert await store.put(changed) == changed
        # A step computed from the old revision no longer applies.
        assert not await store.fire(
            "s", revision="r1", expected_ms=1000, next_ms=2000, message=_stored()
        )
        assert await store.list() == [changed]
        assert await store.remove("s") is True
        assert await store.remove("s") is False
        assert await store.list() == []

    @requires(CAP_SCHEDULES)
    async def test_racing_fire_steps_apply_once(self, backend: Backend) -> None:
        store = _store(backend)
        queue = backend.work_queue("q", WorkQueueOptions())
        await store.put(StoredSchedule(name="s", definition=b"d", revision="r", next_fire_ms=10))
        results = await asyncio.gather(
            *(
                store.fire("s", revision="r", expected_ms=10, next_ms=20, message=_stored())
                for _ in range(20)
            )
        )
        assert results.count(True) == 1
        assert (await queue.inspect()).counters["published"] == 1

    @requires(CAP_SCHEDULES)
    async def test_watchers_hear_a_change(self, backend: Backend) -> None:
        store = _store(backend)
        heard = asyncio.Event()
        stop = await store.watch(heard.set)
        try:
            await store.put(StoredSchedule(name="s", definition=b"d", revision="r", next_fire_ms=1))
            await asyncio.wait_for(heard.wait(), 10)
            heard.clear()
            await store.remove("s")
            await asyncio.wait_for(heard.wait(), 10)
        finally:
            stop()

    # -- the fire loop --------------------------------------------------------------------

    @requires(CAP_SCHEDULES)
    async def test_each_fire_time_publishes_once_across_queues(
        self, make_schedule_queue: MakeQueue
    ) -> None:
        queues = [make_schedule_queue(worker_name=f"w{i}") for i in range(3)]
        seen: list[Message] = []
        for mq in queues:

            @mq.handler("tick")
            async def tick(message: Message) -> None:
                seen.append(message)

        # A generous grace: a loaded machine then publishes a late fire time instead
        # of counting it missed, so the count checks exactly-once, not timing.
        await queues[0].schedule("fast", Message(type="tick"), every="100ms", misfire_grace="30s")
        for mq in queues:
            await mq.start()
        await eventually(lambda: len(seen) >= 6)
        for mq in queues:
            await mq.stop(grace=5)
        times = sorted(_fire_ms(m) for m in seen)
        assert len(times) == len(set(times)), "a fire time was published twice"
        assert all(b - a == 100 for a, b in itertools.pairwise(times)), times
        assert {m.headers["meetq-schedule"] for m in seen} == {"fast"}
        assert len({m.id for m in seen}) == len(seen)

    @requires(CAP_SCHEDULES)
    @pytest.mark.parametrize("misfire", ["skip", "run_once"])
    async def test_fire_times_missed_while_nothing_fired_follow_misfire(
        self, make_schedule_queue: MakeQueue, misfire: str
    ) -> None:
        producer = make_schedule_queue()  # no handler: it never fires
        await producer.start()
        info = await producer.schedule(
            "m", Message(type="tick"), every="200ms", misfire=misfire, misfire_grace="100ms"
        )
        missed_ms = round(info.next_fire_time * 1000)
        # Two fire times pass, each past its grace, while nothing fires.
        await eventually(lambda: time.time() > info.next_fire_time + 0.35)
        consumer = make_schedule_queue(worker_name="late")
        seen: list[Message] = []

        @consumer.handler("tick")
        async def tick(message: Message) -> None:
            seen.append(message)

        started_ms = time.time() * 1000
        await consumer.start()
        # One fire time after the start: the schedule goes on.
        await eventually(lambda: any(_fire_ms(m) > started_ms for m in seen))
        await consumer.stop(grace=5)
        early = [m for m in seen if _fire_ms(m) < started_ms - 100]
        if misfire == "skip":
            assert early == []
        else:
            assert [(_fire_ms(m), m.headers.get("meetq-misfire")) for m in early] == [
                (missed_ms, "run_once")
            ]
        assert (await producer.schedules())[0].next_fire_time * 1000 > started_ms

    @requires(CAP_SCHEDULES)
    async def test_an_unreadable_schedule_is_listed_with_its_error_and_others_fire(
        self, backend: Backend, make_schedule_queue: MakeQueue
    ) -> None:
        await _store(backend).put(
            StoredSchedule(name="junk", definition=b"not json", revision="r", next_fire_ms=1)
        )
        mq = make_schedule_queue()
        seen: list[Message] = []

        @mq.handler("tick")
        async def tick(message: Message) -> None:
            seen.append(message)

        await mq.schedule("good", Message(type="tick"), every="100ms", misfire_grace="30s")
        junk = next(s for s in await mq.schedules() if s.name == "junk")
        assert "unreadable schedule 'junk'" in junk.error and junk.message is None
        await mq.start()
        await eventually(lambda: len(seen) >= 2)
        assert {m.headers["meetq-schedule"] for m in seen} == {"good"}

    @requires(CAP_SCHEDULES)
    async def test_config_schedules_are_stored_at_start_once(
        self, make_schedule_queue: MakeQueue
    ) -> None:
        entry = {
            "name": "nightly",
            "cron": "30 2 * * *",
            "timezone": "America/New_York",
            "type": "report",
            "payload": {"kind": "daily"},
            "priority": "high",
            "misfire": "run_once",
        }
        first = make_schedule_queue(schedules=[entry])
        await first.start()
        [info] = await first.schedules()
        assert (info.name, info.cron, info.timezone, info.misfire) == (
            "nightly",
            "30 2 * * *",
            "America/New_York",
            "run_once",
        )
        assert info.message is not None and info.message.payload == {"kind": "daily"}
        assert (info.next_fire.hour, info.next_fire.minute) == (2, 30)
        second = make_schedule_queue(schedules=[entry], worker_name="second")
        await second.start()
        assert [s.next_fire_time for s in await second.schedules()] == [info.next_fire_time]
