"""The pure side of schedules: next fire times (zones, DST gaps and folds), fire steps,
the stored encoding, the config entries, and a backend without the capability."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from meetq import Message, MessageQueue
from meetq.backends.memory._backend import MemoryBackend
from meetq.core._schedules import (
    Cadence,
    ScheduleDefinition,
    decode_definition,
    encode_definition,
    parse_cadence,
    plan_fire,
)
from meetq.core.config import MessageQueueConfig, load_config
from meetq.core.errors import BackendError, ConfigError, ValidationError
from meetq.core.protocols import StoredSchedule, WorkQueueOptions
from meetq.queue._schedules import QueueSchedules
from meetq.testing import RecordingBackend

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def ms(when: datetime) -> int:
    return round(when.timestamp() * 1000)


def utc(ms_value: int) -> datetime:
    return datetime.fromtimestamp(ms_value / 1000, tz=UTC)


def fires(cadence: Cadence, start: datetime, n: int) -> list[datetime]:
    out, at = [], ms(start)
    for _ in range(n):
        at = cadence.next_after(at)
        out.append(utc(at))
    return out


# -- next_after: the pure next-fire function ----------------------------------------------


def test_every_steps_on_a_grid_anchored_at_the_previous_fire() -> None:
    every = parse_cadence(every="30s")
    assert every.next_after(1_000) == 31_000
    # From any instant, the next point of the grid that started at the anchor.
    assert every.next_after(95_000, 1_000) == 121_000
    assert every.next_after(91_000, 1_000) == 121_000
    assert every.next_after(500, 1_000) == 1_000


def test_cron_in_utc_and_strictly_after() -> None:
    daily = parse_cadence(cron="0 3 * * *")
    start = datetime(2026, 3, 1, 2, 59, tzinfo=UTC)
    assert fires(daily, start, 2) == [
        datetime(2026, 3, 1, 3, 0, tzinfo=UTC),
        datetime(2026, 3, 2, 3, 0, tzinfo=UTC),
    ]
    # Exactly at a fire time: the next one, never the same.
    at = ms(datetime(2026, 3, 1, 3, 0, tzinfo=UTC))
    assert utc(daily.next_after(at)) == datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
    assert utc(daily.next_after(at - 1)) == datetime(2026, 3, 1, 3, 0, tzinfo=UTC)


def test_cron_seconds_field() -> None:
    tens = parse_cadence(cron="*/10 * * * * *")
    start = datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC)
    assert [d.second for d in fires(tens, start, 3)] == [10, 20, 30]


def test_time_zones_move_the_utc_time_with_the_seasons() -> None:
    weekdays = parse_cadence(cron="0 9 * * 1-5", timezone="America/New_York")
    # Friday 2026-01-09 10:00 UTC: next is 09:00 EST = 14:00 UTC that day.
    winter = fires(weekdays, datetime(2026, 1, 9, 10, 0, tzinfo=UTC), 2)
    assert winter == [
        datetime(2026, 1, 9, 14, 0, tzinfo=UTC),
        datetime(2026, 1, 12, 14, 0, tzinfo=UTC),  # Monday: the weekend passed over
    ]
    summer = fires(weekdays, datetime(2026, 7, 1, 0, 0, tzinfo=UTC), 1)
    assert summer == [datetime(2026, 7, 1, 13, 0, tzinfo=UTC)]  # EDT
    assert all(d.astimezone(NEW_YORK).hour == 9 for d in winter + summer)


def test_dst_gap_runs_a_time_of_day_job_right_after_the_gap() -> None:
    # Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
    half_past_two = parse_cadence(cron="30 2 * * *", timezone="Europe/Berlin")
    got = fires(half_past_two, datetime(2026, 3, 28, 12, 0, tzinfo=UTC), 3)
    local = [d.astimezone(BERLIN) for d in got]
    assert [(d.day, d.hour, d.minute) for d in local] == [(29, 3, 0), (30, 2, 30), (31, 2, 30)]
    assert got[0] == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_dst_gap_skips_the_missing_hour_for_an_hourly_step() -> None:
    # A job stepping through hours counts real time: 02:xx simply never comes.
    hourly = parse_cadence(cron="15 * * * *", timezone="Europe/Berlin")
    got = fires(hourly, datetime(2026, 3, 29, 0, 0, tzinfo=UTC), 3)
    local = [d.astimezone(BERLIN) for d in got]
    assert [(d.hour, d.minute) for d in local] == [(1, 15), (3, 15), (4, 15)]
    assert [b - a for a, b in itertools.pairwise(got)] == [got[1] - got[0]] * 2


def test_dst_fold_runs_a_time_of_day_job_once_at_its_first_occurrence() -> None:
    # Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    half_past_two = parse_cadence(cron="30 2 * * *", timezone="Europe/Berlin")
    got = fires(half_past_two, datetime(2026, 10, 24, 12, 0, tzinfo=UTC), 2)
    assert got == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 02:30 CEST, the first of the two
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),  # 02:30 CET the next day
    ]
    # Seen from inside the second half of the fold (02:10 CET), the first 02:30 has
    # passed: the next is tomorrow's, never a time before the given one.
    inside = ms(datetime(2026, 10, 25, 1, 10, tzinfo=UTC))
    assert utc(half_past_two.next_after(inside)) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)


def test_dst_fold_runs_a_stepping_job_in_both_halves() -> None:
    every_half_hour = parse_cadence(cron="*/30 * * * *", timezone="Europe/Berlin")
    got = fires(every_half_hour, datetime(2026, 10, 24, 23, 50, tzinfo=UTC), 5)
    assert [d.strftime("%H:%M") for d in got] == ["00:00", "00:30", "01:00", "01:30", "02:00"]
    local = [d.astimezone(BERLIN).strftime("%H:%M %Z") for d in got]
    assert local == ["02:00 CEST", "02:30 CEST", "02:00 CET", "02:30 CET", "03:00 CET"]


def test_bad_cadences_name_the_field() -> None:
    for kwargs, field in [
        ({"cron": "60 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "cron"),  # February 30th never comes
        ({"cron": 5}, "cron"),
        ({"every": "1x"}, "every"),
        ({"every": "5ms"}, "every"),
        ({"every": True}, "every"),
        ({}, "cron"),
        ({"cron": "0 * * * *", "every": 1}, "cron"),
        ({"every": 1, "timezone": "Europe/Nowhere"}, "timezone"),
        ({"every": 1, "timezone": "../etc/passwd"}, "timezone"),
        ({"every": 1, "timezone": ""}, "timezone"),
    ]:
        with pytest.raises(ValidationError) as info:
            parse_cadence(prefix="s.", **kwargs)
        assert info.value.field == f"s.{field}", kwargs


# -- plan_fire: one fire step --------------------------------------------------------------


def definition(**kwargs: object) -> ScheduleDefinition:
    return ScheduleDefinition.build("s", Message(type="tick"), **kwargs)  # type: ignore[arg-type]


def test_a_due_fire_time_within_its_grace_publishes_and_steps_to_its_successor() -> None:
    d = definition(every="10s")
    assert plan_fire(d, 100_000, 99_999) is None
    plan = plan_fire(d, 100_000, 100_000)
    assert plan is not None and (plan.fire_ms, plan.next_ms, plan.missed) == (
        100_000,
        110_000,
        False,
    )
    # Late but within the default grace (the gap to the next, here 10 s).
    late = plan_fire(d, 100_000, 109_000)
    assert late is not None and (late.fire_ms, late.next_ms) == (100_000, 110_000)


def test_missed_fire_times_skip_or_run_once() -> None:
    # Found 35 s late with a 10 s grace: 100, 110 and 120 were missed; 130 is still
    # within its grace, so the schedule resumes there (the next step publishes it).
    skip = plan_fire(definition(every="10s"), 100_000, 135_000)
    assert skip is not None and (skip.fire_ms, skip.next_ms, skip.missed) == (None, 130_000, True)
    once = plan_fire(definition(every="10s", misfire="run_once"), 100_000, 135_000)
    assert once is not None and (once.fire_ms, once.next_ms, once.missed) == (
        100_000,
        130_000,
        True,
    )
    resumed = plan_fire(definition(every="10s"), 130_000, 135_000)
    assert resumed is not None and (resumed.fire_ms, resumed.missed) == (130_000, False)
    # With a grace longer than the gap, late fire times catch up one step at a time.
    d = definition(every="10s", misfire_grace="1m")
    plan = plan_fire(d, 100_000, 135_000)
    assert plan is not None and (plan.fire_ms, plan.next_ms) == (100_000, 110_000)
    # Missed with a long grace: it resumes at the first fire time still within it.
    gone = plan_fire(d, 100_000, 400_000)
    assert gone is not None and (gone.fire_ms, gone.next_ms) == (None, 340_000)


def test_the_default_grace_is_the_gap_at_most_a_minute() -> None:
    assert definition(every="10s").grace_ms(0) == 10_000
    assert definition(every="1h").grace_ms(0) == 60_000
    assert definition(cron="0 3 * * *").grace_ms(ms(datetime(2026, 1, 1, 3, tzinfo=UTC))) == 60_000
    assert definition(every="1h", misfire_grace=5).grace_ms(0) == 5_000


# -- the stored encoding ------------------------------------------------------------------


def test_definitions_encode_canonically_and_back() -> None:
    d = ScheduleDefinition.build(
        "nightly",
        Message(type="report", payload={"b": 1, "a": [1, 2]}, headers={"x": "y"}),
        cron="0 3 * * *",
        timezone="Europe/Berlin",
        misfire="run_once",
    )
    again = ScheduleDefinition.build(
        "nightly",
        Message(type="report", payload={"a": [1, 2], "b": 1}, headers={"x": "y"}),
        cron="0  3 * * *",
        timezone="Europe/Berlin",
        misfire="run_once",
    )
    assert encode_definition(d) == encode_definition(again)
    back = decode_definition("nightly", encode_definition(d))
    assert back == d
    fired = back.message_for(ms(datetime(2026, 1, 1, 2, tzinfo=UTC)))
    assert fired.headers == {
        "x": "y",
        "meetq-schedule": "nightly",
        "meetq-fire-time": "2026-01-01T02:00:00.000+00:00",
    }
    for junk in [b"", b"{", b"[]", b'{"v": 2}', b'{"v": 1, "every": 1, "message": 3}']:
        with pytest.raises(ValueError, match="unreadable schedule 'nightly'"):
            decode_definition("nightly", junk)


# -- config --------------------------------------------------------------------------------


def test_config_schedules_are_validated_and_built() -> None:
    config = load_config(
        {
            "message_queue": {
                "schedules": [
                    {"name": "a", "every": "30s", "type": "tick"},
                    {
                        "name": "b",
                        "cron": "0 3 * * *",
                        "timezone": "Europe/Berlin",
                        "type": "report",
                        "payload": {"k": 1},
                        "priority": "high",
                        "misfire": "run_once",
                    },
                ]
            }
        },
        environ={},
    )
    a, b = config.message_queue.schedules
    assert (a.name, a.cadence.every, a.misfire) == ("a", 30.0, "skip")
    assert (b.cadence.cron, b.cadence.timezone) == ("0 3 * * *", "Europe/Berlin")
    assert b.misfire == "run_once"
    assert b.message["payload"] == {"k": 1} and b.message["priority"] == 2
    assert hash(config.message_queue) == hash(config.message_queue)  # still hashable


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"name": "a", "every": "30s"}, "type"),
        ({"name": "a", "cron": "99 * * * *", "type": "t"}, "cron"),
        ({"name": "a", "every": "x", "type": "t"}, "every"),
        ({"name": "a", "every": 1, "type": "t", "timezone": "Nope/Nope"}, "timezone"),
        ({"name": "a", "every": 1, "type": "t", "misfire": "x"}, "misfire"),
        ({"name": "a", "every": 1, "type": "t", "priority": 9}, "priority"),
        ({"name": "a", "every": 1, "type": "t", "crn": "x"}, "crn"),
        ({"every": 1, "type": "t"}, "name"),
        ("a", ""),
    ],
)
def test_config_schedule_errors_name_the_key(entry: object, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"message_queue": {"schedules": [entry]}}, environ={})
    assert info.value.key == "message_queue.schedules[0]" + (f".{key}" if key else "")


def test_config_schedule_names_are_unique_and_the_list_is_a_list() -> None:
    twice = [{"name": "a", "every": 1, "type": "t"}, {"name": "a", "every": 2, "type": "t"}]
    with pytest.raises(ConfigError) as info:
        load_config({"message_queue": {"schedules": twice}}, environ={})
    assert info.value.key == "message_queue.schedules[1].name"
    with pytest.raises(ConfigError) as info:
        load_config({"message_queue": {"schedules": {"name": "a"}}}, environ={})
    assert info.value.key == "message_queue.schedules"
    with pytest.raises(ConfigError, match="did you mean 'cron'"):
        MessageQueueConfig(schedules=[{"name": "a", "crom": "0 * * * *", "type": "t"}])


def test_config_schedules_from_the_environment() -> None:
    config = load_config(
        {}, environ={"MEETQ_MESSAGE_QUEUE__SCHEDULES": "[{name: e, every: 1m, type: t}]"}
    )
    assert [s.name for s in config.message_queue.schedules] == ["e"]


# -- a backend without the capability -----------------------------------------------------


async def test_a_backend_without_schedules_refuses_them_clearly() -> None:
    plain = RecordingBackend(MemoryBackend())
    plain.capabilities = frozenset()
    mq = MessageQueue(plain, queue_name="q")
    with pytest.raises(BackendError, match="does not declare capability 'schedules'"):
        await mq.schedule("s", Message(type="t"), every=60)
    with pytest.raises(BackendError):
        await mq.schedules()
    configured = MessageQueue(
        plain, queue_name="q2", schedules=[{"name": "s", "every": 60, "type": "t"}]
    )
    with pytest.raises(BackendError):
        await configured.start()
    await plain.aclose()


async def test_the_fire_loop_ends_on_cancel_even_when_a_call_swallows_it() -> None:
    # A driver may swallow a cancellation mid-call (retry the command and return): the
    # loop must still end, or MessageQueue.stop() would wait for it forever.
    entered = asyncio.Event()

    class SwallowingStore:
        async def list(self) -> list[StoredSchedule]:
            entered.set()
            with contextlib.suppress(asyncio.CancelledError):  # as a misbehaving driver
                await asyncio.Event().wait()
            return []

        async def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
            return lambda: None

    backend = MemoryBackend()
    queue = backend.work_queue("q", WorkQueueOptions())
    schedules = QueueSchedules(backend, queue, "q", lambda m: None)  # type: ignore[arg-type,return-value]
    schedules._store = SwallowingStore()  # type: ignore[assignment]
    loop = asyncio.create_task(schedules.run())
    await asyncio.wait_for(entered.wait(), 5)
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(loop, 5)
    await backend.aclose()
