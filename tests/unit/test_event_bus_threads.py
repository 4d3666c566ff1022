"""LocalEventBus.emit and emit_blocking from threads other than the bus's loop (issue 12)."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

import pytest

from meetq import ClosedError, LocalEvent, LocalEventBus, QueueFull, ValidationError

THREADS = 8
PER_THREAD = 400


class _Recorder:
    """An async handler that records events and signals when ``expected`` have arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.events: list[LocalEvent] = []
        self.all_in = asyncio.Event()

    async def __call__(self, event: LocalEvent) -> None:
        self.events.append(event)
        if len(self.events) >= self.expected:
            self.all_in.set()


def _threads(target: object, count: int) -> list[threading.Thread]:
    return [threading.Thread(target=target, args=(i,)) for i in range(count)]  # type: ignore[arg-type]


async def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join)


async def test_many_threads_emit_and_each_keeps_its_order_per_type() -> None:
    asyncio.get_running_loop().set_debug(True)  # asyncio's own thread-safety checks on
    total = THREADS * PER_THREAD * 2
    bus = LocalEventBus(buffer_size=total, workers=4)
    shared, own = _Recorder(THREADS * PER_THREAD), _Recorder(THREADS * PER_THREAD)
    bus.on("shared", shared)
    for i in range(THREADS):
        bus.on(f"own-{i}", own)
    errors: list[BaseException] = []

    def emitter(i: int) -> None:
        try:
            for seq in range(PER_THREAD):
                bus.emit("shared", {"thread": i, "seq": seq}, f"thread-{i}")
                bus.emit(f"own-{i}", {"thread": i, "seq": seq})
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    async with bus:
        await _join(_threads(emitter, THREADS))
        await asyncio.wait_for(shared.all_in.wait(), 30)
        await asyncio.wait_for(own.all_in.wait(), 30)
        assert errors == []
        for recorder in (shared, own):
            by_thread: dict[int, list[int]] = defaultdict(list)
            for event in recorder.events:
                by_thread[event.payload["thread"]].append(event.payload["seq"])
            assert by_thread == {i: list(range(PER_THREAD)) for i in range(THREADS)}
        assert {e.source for e in shared.events} == {f"thread-{i}" for i in range(THREADS)}
        assert len({e.id for e in shared.events + own.events}) == total
    stats = bus.stats()
    assert stats["total_events"] == stats["processed_events"] == total
    assert stats["pending_events"] == 0


async def test_a_plain_handler_emitting_from_its_thread_is_handled_under_asyncio_debug() -> None:
    # The original bug: a plain handler (run in a thread) emitting a follow-up event set a
    # loop future from its thread; under debug that raised "Non-thread-safe operation".
    asyncio.get_running_loop().set_debug(True)
    bus = LocalEventBus()
    followed = _Recorder(1)
    seen_threads: list[int] = []

    def plain(event: LocalEvent) -> None:
        seen_threads.append(threading.get_ident())
        bus.emit("follow_up", {"from": event.id})

    bus.on("first", plain)
    bus.on("follow_up", followed)
    async with bus:
        bus.emit("first", {})
        await asyncio.wait_for(followed.all_in.wait(), 30)
    assert seen_threads and seen_threads[0] != threading.get_ident()
    assert bus.stats()["failed_events"] == 0 and bus.stats()["processed_events"] == 2


async def test_emit_blocking_waits_until_handled_from_many_threads() -> None:
    bus = LocalEventBus(buffer_size=2, workers=2, overflow="wait")
    handled: set[tuple[int, int]] = set()

    async def handler(event: LocalEvent) -> None:
        await asyncio.sleep(0)
        handled.add((event.payload["thread"], event.payload["seq"]))

    bus.on("job", handler)
    missing: list[tuple[int, int]] = []
    results: list[bool] = []

    def emitter(i: int) -> None:
        for seq in range(50):
            results.append(
                bus.emit_blocking("job", {"thread": i, "seq": seq}, wait_handled=True, timeout=30)
            )
            if (i, seq) not in handled:  # it returned, so its handler has run
                missing.append((i, seq))

    async with bus:
        await _join(_threads(emitter, THREADS))
    assert missing == []
    assert results == [True] * THREADS * 50 and len(handled) == THREADS * 50


async def test_emit_blocking_refuses_the_loop_thread_and_an_unstarted_bus() -> None:
    bus = LocalEventBus()
    with pytest.raises(ValidationError, match="not started"):
        await asyncio.to_thread(bus.emit_blocking, "x")
    async with bus:
        with pytest.raises(ValidationError, match="own loop"):
            bus.emit_blocking("x")
        assert await asyncio.to_thread(bus.emit_blocking, "x", None, None, timeout=30) is True
    with pytest.raises(ClosedError):
        await asyncio.to_thread(bus.emit_blocking, "x")


@pytest.mark.parametrize("overflow", ["raise", "drop"])
async def test_a_full_buffer_raises_in_the_emitting_thread_and_drop_counts(overflow: str) -> None:
    gate = asyncio.Event()

    async def blocked(event: LocalEvent) -> None:
        await gate.wait()

    bus = LocalEventBus(buffer_size=3, workers=1, overflow=overflow)  # type: ignore[arg-type]
    bus.on("x", blocked)
    outcomes: list[str] = []

    def emit_five() -> None:
        for _ in range(5):
            try:
                bus.emit("x", {})
                outcomes.append("ok")
            except QueueFull:
                outcomes.append("full")

    async with bus:
        await asyncio.to_thread(emit_five)
        assert outcomes == (["ok"] * 3 + ["full"] * 2 if overflow == "raise" else ["ok"] * 5)
        # The drops are counted on the loop by callbacks queued before to_thread returned.
        assert bus.stats()["dropped_events"] == (2 if overflow == "drop" else 0)
        assert bus.stats()["total_events"] == 3
        gate.set()


async def test_events_emitted_from_a_thread_just_before_stop_are_handled() -> None:
    bus = LocalEventBus(buffer_size=100, workers=2)
    recorder = _Recorder(50)
    bus.on("late", recorder)
    await bus.start()

    def emit_fifty() -> None:
        for seq in range(50):
            bus.emit("late", {"seq": seq})

    # Joined without yielding to the loop: the hand-over callbacks are queued, not run,
    # when stop() begins.
    thread = threading.Thread(target=emit_fifty)
    thread.start()
    thread.join()
    await bus.stop()
    assert [e.payload["seq"] for e in recorder.events] == list(range(50))
    assert bus.stats()["dropped_events"] == 0
    with pytest.raises(ClosedError):
        await asyncio.to_thread(bus.emit, "late", {})


async def test_threads_may_emit_before_start() -> None:
    bus = LocalEventBus(buffer_size=THREADS * 10)
    recorder = _Recorder(THREADS * 10)
    bus.on("early", recorder)

    def emitter(i: int) -> None:
        for seq in range(10):
            bus.emit("early", {"thread": i, "seq": seq})

    await _join(_threads(emitter, THREADS))
    assert bus.stats()["pending_events"] == THREADS * 10
    async with bus:
        await asyncio.wait_for(recorder.all_in.wait(), 30)
    for i in range(THREADS):
        assert [e.payload["seq"] for e in recorder.events if e.payload["thread"] == i] == list(
            range(10)
        )
