"""``LocalEventBus`` semantics: order, non-blocking emit, counted overflow, drain.

The event bus is in-process and touches no backend, so nothing here can differ between
backends: these tests run once, here, not per backend in the shipped contract suite
(they were ``meetq.testing.EventBusContract`` until the suite was re-scoped).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest
import pytest_asyncio

from meetq import LocalEventBus
from meetq.core.config import MeetqConfig, load_config
from meetq.core.errors import ClosedError, QueueFull, ValidationError
from meetq.core.types import LocalEvent
from meetq.testing import wait_until

TIMEOUT = 5.0
BusFactory = Callable[..., LocalEventBus]


class Recorder:
    """An async handler that records events and lets a test wait for a count."""

    def __init__(self) -> None:
        self.events: list[LocalEvent] = []
        self._changed = asyncio.Event()

    async def __call__(self, event: LocalEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, count: int) -> list[LocalEvent]:
        async def wait() -> None:
            while len(self.events) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), TIMEOUT)
        return self.events


class TestLocalEventBus:
    """In-process event semantics: order, non-blocking emit, counted overflow, drain."""

    @pytest.fixture
    def meetq_config(self) -> MeetqConfig:
        """The default config: the bus reads only its own ``event_bus`` section."""
        return load_config({})

    @pytest_asyncio.fixture
    async def make_bus(self, meetq_config: MeetqConfig) -> AsyncIterator[BusFactory]:
        """Build buses from the default ``event_bus`` config plus overrides."""
        made: list[LocalEventBus] = []

        def make(**overrides: Any) -> LocalEventBus:
            bus = LocalEventBus.from_config(attrs.evolve(meetq_config.event_bus, **overrides))
            made.append(bus)
            return bus

        try:
            yield make
        finally:
            for bus in made:
                await bus.stop(grace=1.0)

    async def test_on_emit_delivers_event(self, make_bus: BusFactory) -> None:
        bus = make_bus()
        got = Recorder()
        bus.on("stream_started", got)
        await bus.start()
        bus.emit("stream_started", {"stream_id": "s1"}, "media_service")  # returns at once
        [event] = await got.wait_for(1)
        assert event.type == "stream_started"
        assert dict(event.payload) == {"stream_id": "s1"}
        assert event.source == "media_service"
        assert len(event.id) == 32 and event.timestamp > 0

    async def test_off_and_wildcard(self, make_bus: BusFactory) -> None:
        bus = make_bus()
        a, b, everything = Recorder(), Recorder(), Recorder()
        bus.on("t", a)
        bus.on("t", b)
        bus.on("*", everything)
        bus.off("t", b)
        await bus.start()
        bus.emit("t", {"n": 1})
        bus.emit("other", {"n": 2})
        await bus.emit_sync("t", {"n": 3}, wait_handled=True)
        await bus.emit_sync("other", {"n": 4}, wait_handled=True)
        assert [e.payload["n"] for e in a.events] == [1, 3]
        assert b.events == []
        assert sorted(e.payload["n"] for e in everything.events) == [1, 2, 3, 4]
        bus.off("t")
        assert bus.handler_count("t") == 0 and bus.handler_count("*") == 1

    async def test_bus_plain_handler_runs_in_a_thread(self, make_bus: BusFactory) -> None:
        bus = make_bus()
        threads: list[int] = []
        bus.on("p", lambda event: threads.append(threading.get_ident()))
        await bus.start()
        await bus.emit_sync("p", {}, wait_handled=True)
        assert threads and threads[0] != threading.get_ident()

    async def test_per_type_order_with_many_workers(self, make_bus: BusFactory) -> None:
        bus = make_bus(workers=4, buffer_size=10_000)
        per_type = {kind: Recorder() for kind in ("a", "b", "c", "d", "e")}
        everything = Recorder()
        for kind, recorder in per_type.items():

            async def slow(event: LocalEvent, recorder: Recorder = recorder) -> None:
                await asyncio.sleep(0)  # interleave workers
                await recorder(event)

            bus.on(kind, slow)
        bus.on("*", everything)
        await bus.start()
        kinds = list(per_type)
        for i in range(1000):
            bus.emit(kinds[i % 5], {"i": i})
        for recorder in per_type.values():
            await recorder.wait_for(200)
        await everything.wait_for(1000)
        for kind, recorder in per_type.items():
            sequence = [e.payload["i"] for e in recorder.events]
            assert sequence == sorted(sequence) and len(sequence) == 200, kind
            wildcard_sequence = [e.payload["i"] for e in everything.events if e.type == kind]
            assert wildcard_sequence == sequence

    async def test_overflow_raise_is_default(self, make_bus: BusFactory) -> None:
        bus = make_bus(buffer_size=3)
        assert bus.stats()["buffer_size"] == 3
        got = Recorder()
        bus.on("x", got)
        for i in range(3):
            bus.emit("x", {"i": i})  # accepted before start: waits in the buffer
        with pytest.raises(QueueFull) as info:
            bus.emit("x", {"i": 3})
        assert info.value.capacity == 3
        with pytest.raises(QueueFull):
            await bus.emit_sync("x", {"i": 3})
        await bus.start()
        await got.wait_for(3)
        assert bus.stats()["dropped_events"] == 0

    async def test_overflow_drop_counts(
        self, make_bus: BusFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        bus = make_bus(buffer_size=2, overflow="drop")
        got = Recorder()
        bus.on("x", got)
        for i in range(5):
            bus.emit("x", {"i": i})
        assert await bus.emit_sync("x", {"i": 5}) is False
        stats = bus.stats()
        assert stats["dropped_events"] == 4
        assert stats["pending_events"] == 2
        assert any("dropped" in r.getMessage() for r in caplog.records)
        await bus.start()
        await got.wait_for(2)
        assert [e.payload["i"] for e in got.events] == [0, 1]

    async def test_overflow_wait_blocks_emit_sync_until_room(self, make_bus: BusFactory) -> None:
        bus = make_bus(buffer_size=1, overflow="wait")
        got = Recorder()
        bus.on("x", got)
        bus.emit("x", {"i": 0})
        with pytest.raises(QueueFull):
            bus.emit("x", {"i": 1})  # emit never blocks, so it cannot wait
        waiting = asyncio.create_task(bus.emit_sync("x", {"i": 1}))
        await asyncio.sleep(0)
        assert not waiting.done()  # no room until the bus runs
        await bus.start()
        assert await asyncio.wait_for(waiting, TIMEOUT) is True
        await got.wait_for(2)
        assert [e.payload["i"] for e in got.events] == [0, 1]

    async def test_emit_sync_wait_handled(self, make_bus: BusFactory) -> None:
        bus = make_bus()
        done: list[int] = []

        async def handler(event: LocalEvent) -> None:
            await asyncio.sleep(0)
            done.append(event.payload["i"])

        bus.on("h", handler)
        await bus.start()
        await bus.emit_sync("h", {"i": 1}, wait_handled=True)
        assert done == [1]
        await bus.emit_sync("h", {"i": 2})  # accepted, maybe not handled yet
        await wait_until(lambda: done == [1, 2])

    async def test_handler_exception_contained(self, make_bus: BusFactory) -> None:
        bus = make_bus()
        after = Recorder()

        async def broken(event: LocalEvent) -> None:
            raise RuntimeError("bug")

        bus.on("e", broken)
        bus.on("e", after)
        await bus.start()
        await bus.emit_sync("e", {}, wait_handled=True)
        await bus.emit_sync("e", {}, wait_handled=True)
        assert len(after.events) == 2
        stats = bus.stats()
        assert stats["failed_events"] == 2
        assert stats["processed_events"] == 0

    async def test_stop_drains_then_rejects(self, make_bus: BusFactory) -> None:
        bus = make_bus(buffer_size=100)
        got = Recorder()

        async def slow(event: LocalEvent) -> None:
            await asyncio.sleep(0)
            await got(event)

        bus.on("d", slow)
        await bus.start()
        for i in range(50):
            bus.emit("d", {"i": i})
        await bus.stop()
        assert len(got.events) == 50
        stats = bus.stats()
        assert stats["pending_events"] == 0 and stats["processed_events"] == 50
        with pytest.raises(ClosedError):
            bus.emit("d", {})
        with pytest.raises(ClosedError):
            await bus.emit_sync("d", {})
        await bus.stop()  # idempotent

    async def test_stop_grace_expires_counts_dropped(self, make_bus: BusFactory) -> None:
        bus = make_bus()
        never = asyncio.Event()

        async def stuck(event: LocalEvent) -> None:
            await never.wait()

        bus.on("s", stuck)
        await bus.start()
        bus.emit("s", {})
        bus.emit("s", {})
        await bus.stop(grace=0.05)
        assert bus.stats()["dropped_events"] == 2

    async def test_stats_keys(self, make_bus: BusFactory) -> None:
        bus = make_bus()
        got = Recorder()
        bus.on("k", got)
        async with bus:
            await bus.emit_sync("k", {}, wait_handled=True)
            stats = bus.stats()
        assert {
            "total_events",
            "processed_events",
            "failed_events",
            "dropped_events",
            "pending_events",
            "buffer_size",
        } <= set(stats)
        assert stats["total_events"] == 1 and stats["processed_events"] == 1

    async def test_validation(self, make_bus: BusFactory) -> None:
        bus = make_bus()
        with pytest.raises(ValidationError) as info:
            bus.emit("", {})
        assert info.value.field == "type"
        with pytest.raises(ValidationError) as payload:
            bus.emit("t", {1: "x"})  # type: ignore[dict-item]
        assert "payload" in payload.value.field
        with pytest.raises(ValidationError):
            bus.on("t", "not callable")  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            LocalEventBus(buffer_size=0)
        assert bus.stats()["total_events"] == 0

    async def test_sized_from_config(self, meetq_config: MeetqConfig) -> None:
        config = attrs.evolve(meetq_config.event_bus, buffer_size=77, workers=3)
        bus = LocalEventBus.from_config(config)
        stats = bus.stats()
        assert stats["buffer_size"] == 77 and stats["workers"] == 3
        await bus.stop()

    async def test_handler_raising_cancelled_error_does_not_stop_the_bus(
        self, make_bus: BusFactory
    ) -> None:
        bus = make_bus(workers=1)
        await bus.start()
        seen: list[int] = []

        async def handler(event: LocalEvent) -> None:
            seen.append(event.payload["n"])
            if event.payload["n"] == 0:
                doomed = asyncio.ensure_future(asyncio.Event().wait())
                doomed.cancel()
                await doomed  # raises CancelledError inside the handler

        bus.on("tick", handler)
        for n in range(3):
            bus.emit("tick", {"n": n})
        await bus.emit_sync("tick", {"n": 3}, wait_handled=True)
        assert seen == [0, 1, 2, 3]
        stats = bus.stats()
        assert stats["failed_events"] == 1 and stats["processed_events"] == 3

    async def test_cancelled_emit_sync_passes_its_room_on(self, make_bus: BusFactory) -> None:
        bus = make_bus(workers=1, buffer_size=1, overflow="wait")
        await bus.start()
        gate = asyncio.Event()

        async def slow(event: LocalEvent) -> None:
            await gate.wait()

        bus.on("job", slow)
        bus.emit("job", {})  # fills the one slot
        first = asyncio.ensure_future(bus.emit_sync("job", {"who": "first"}))
        second = asyncio.ensure_future(bus.emit_sync("job", {"who": "second"}))
        await wait_until(lambda: len(bus._space_waiters) == 2)
        gate.set()
        # One loop step: the worker finishes the event and hands the free slot to
        # `first`, whose caller then gives up before using it.
        await asyncio.sleep(0)
        first.cancel()
        assert await asyncio.wait_for(second, 5) is True
        with contextlib.suppress(asyncio.CancelledError):
            await first
