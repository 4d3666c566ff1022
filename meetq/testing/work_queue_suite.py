"""Contract tests for ``MessageQueue`` and the ``WorkQueueBackend`` beneath it.

Every test runs through the public API (or, where a failure has to be staged, the
backend primitives) and holds on every backend that binds the suite.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from meetq import MessageQueue, QueueManager
from meetq.core._durations import MAX_DURATION
from meetq.core._validation import MAX_DEAD_LETTER_BATCH, MAX_PAYLOAD_DEPTH
from meetq.core.config import MeetqConfig, MessageQueueConfig
from meetq.core.errors import (
    BackendUnavailableError,
    ClosedError,
    ConfigError,
    SerializationError,
    ValidationError,
)
from meetq.core.protocols import (
    OUTCOME_COUNTERS,
    Backend,
    LeaseRef,
    Maintenance,
    Settlement,
    StoredMessage,
    WorkQueueOptions,
)
from meetq.core.types import Message, Priority, PubSubMessage
from meetq.testing._base import BackendContract
from meetq.testing._helpers import QUICK, eventually
from meetq.testing._recording import RecordingBackend

__all__ = ["WorkQueueContract"]

MakeQueue = Callable[..., MessageQueue]


class WorkQueueContract(BackendContract):
    """The work-queue part of the contract suite."""

    @pytest_asyncio.fixture
    async def make_queue(
        self, backend: Backend, contract_queue_name: str
    ) -> AsyncIterator[Callable[..., MessageQueue]]:
        made: list[MessageQueue] = []

        def make(*, via: Backend | None = None, **overrides: Any) -> MessageQueue:
            # `via`: the backend wrapped (a RecordingBackend) to stage a failure.
            settings = {**QUICK, "queue_name": contract_queue_name, **overrides}
            mq = MessageQueue(via or backend, **settings)
            made.append(mq)
            return mq

        yield make
        for mq in made:
            await mq.stop(grace=0)

    # -- publish and validation ----------------------------------------------------------

    async def test_publish_returns_id_and_handler_sees_message(self, make_queue: MakeQueue) -> None:
        mq = make_queue()
        seen: list[Message] = []
        done = asyncio.Event()

        @mq.handler("greet")
        async def greet(msg: Message) -> None:
            seen.append(msg)
            done.set()

        sent = Message(
            type="greet",
            payload={"name": "ada", "n": [1, 2.5, None, True]},
            priority=Priority.HIGH,
            source="svc",
            headers={"trace": "t1"},
        )
        message_id = await mq.publish(sent)
        assert message_id == sent.id
        async with mq:
            await asyncio.wait_for(done.wait(), 10)
        got = seen[0]
        assert (got.id, got.type, got.priority, got.source) == (
            sent.id,
            "greet",
            Priority.HIGH,
            "svc",
        )
        assert got.payload == {"name": "ada", "n": [1, 2.5, None, True]}
        assert got.headers == {"trace": "t1"}
        assert got.attempt == 1 and got.retry_count == 0
        assert got.max_retries == 3  # filled in from the config default

    async def test_default_priority_is_normal(self, make_queue: MakeQueue) -> None:
        mq = make_queue()
        await mq.publish(Message(type="t"))
        assert await mq.queue_length(Priority.NORMAL) == 1
        assert await mq.queue_length() == 1

    async def test_bad_input_names_the_field_and_stores_nothing(
        self, make_queue: MakeQueue
    ) -> None:
        mq = make_queue()
        with pytest.raises(ValidationError) as info:
            await mq.publish({"type": "x"})  # type: ignore[arg-type]
        assert info.value.field == "message"
        with pytest.raises(ValidationError) as info:
            await mq.publish(Message(type="x"), delay=-1)
        assert info.value.field == "delay"
        with pytest.raises(ValidationError) as info:
            Message(type="x", priority=7)
        assert info.value.field == "priority" and info.value.value == 7
        with pytest.raises(ValidationError):
            Message(type="")
        with pytest.raises(SerializationError) as info:
            await mq.publish(Message(type="x", payload={"when": object()}))
        assert info.value.field == "message.payload.when"
        assert await mq.queue_length() == 0
        assert (await mq.stats())["total_published"] == 0

    # -- bad input: always a meetq error (docs/reliability.md) ---------------------------

    @pytest.mark.parametrize(
        "seconds",
        [10**400, 1e300, float("inf"), float("nan")],
        ids=["10**400", "1e300", "inf", "nan"],
    )
    async def test_an_impossible_duration_is_a_meetq_error(
        self, make_queue: MakeQueue, seconds: float
    ) -> None:
        mq = make_queue()
        for field in ("delay", "not_before"):
            with pytest.raises(ValidationError) as info:
                await mq.publish(Message(type="t"), **{field: seconds})
            assert info.value.field == field
        with pytest.raises(ValidationError) as batch:
            await mq.publish_batch([Message(type="t")], delay=seconds)
        assert batch.value.field == "delay"
        with pytest.raises(ValidationError) as timeout:
            Message(type="t", timeout=seconds)
        assert timeout.value.field == "timeout"
        if seconds != 1e300:  # a timestamp far ahead is odd but harmless
            with pytest.raises(ValidationError) as stamp:
                Message(type="t", timestamp=seconds)
            assert stamp.value.field == "timestamp"
        for key in ("visibility_timeout", "poll_interval", "handler_timeout"):
            with pytest.raises(ConfigError) as config:
                make_queue(**{key: seconds})
            assert config.value.key == f"message_queue.{key}"
        with pytest.raises(ValidationError) as grace:
            await mq.stop(seconds)
        assert grace.value.field == "grace"
        assert await mq.queue_length() == 0

    async def test_the_longest_duration_is_accepted(self, make_queue: MakeQueue) -> None:
        mq = make_queue(visibility_timeout=MAX_DURATION)
        await mq.publish(Message(type="t", timeout=MAX_DURATION), delay=MAX_DURATION)
        assert await mq.queue_length() == 1
        with pytest.raises(ValidationError):
            await mq.publish(Message(type="t"), delay=MAX_DURATION * 1.01)

    async def test_a_name_with_a_lone_surrogate_is_rejected(self, make_queue: MakeQueue) -> None:
        bad = "q\ud800"
        with pytest.raises(ConfigError) as queue:
            make_queue(queue_name=bad)
        assert queue.value.key == "message_queue.queue_name"
        mq = make_queue()
        with pytest.raises(ValidationError) as handler:
            mq.register_handler(bad, lambda message: None)
        assert handler.value.field == "message_type"
        for field in ("type", "id", "source", "destination", "dedup_key"):
            kwargs: dict[str, Any] = {"type": "t", field: bad}
            with pytest.raises(ValidationError) as info:
                Message(**kwargs)
            assert info.value.field == field and "surrogate" in str(info.value)
        assert mq.handled_types == []

    async def test_a_too_deep_or_too_long_payload_is_refused_by_name(
        self, make_queue: MakeQueue
    ) -> None:
        mq = make_queue()
        done = asyncio.Event()
        seen: list[Message] = []

        @mq.handler("deep")
        async def deep(message: Message) -> None:
            seen.append(message)
            done.set()

        def nested(levels: int) -> dict[str, Any]:
            tree: dict[str, Any] = {}
            for _ in range(levels - 1):
                tree = {"k": tree}
            return tree

        for payload, problem in (
            (nested(5000), "nested deeper than"),
            (nested(MAX_PAYLOAD_DEPTH + 1), "nested deeper than"),
            ({"n": 10**5000}, "too long for JSON"),
            ({"n": [1, -(10**4301)]}, "too long for JSON"),
        ):
            with pytest.raises(SerializationError) as info:
                await mq.publish(Message(type="deep", payload=payload))
            assert info.value.field.startswith("message.payload") and problem in str(info.value)
        # Exactly the limit is fine, and arrives whole.
        await mq.publish(Message(type="deep", payload=nested(MAX_PAYLOAD_DEPTH)))
        async with mq:
            await asyncio.wait_for(done.wait(), 10)
        assert seen[0].payload == nested(MAX_PAYLOAD_DEPTH)
        assert (await mq.stats())["total_published"] == 1

    async def test_dead_letter_counts_are_bounded(self, make_queue: MakeQueue) -> None:
        mq = make_queue()
        for bad in (10**30, MAX_DEAD_LETTER_BATCH + 1, -1, True, 2.0):
            with pytest.raises(ValidationError) as listed:
                await mq.dead_letters(bad)  # type: ignore[arg-type]
            assert listed.value.field == "limit"
            with pytest.raises(ValidationError) as requeued:
                await mq.requeue_dead_letters(bad)  # type: ignore[arg-type]
            assert requeued.value.field == "max_count"
        assert await mq.dead_letters(MAX_DEAD_LETTER_BATCH) == []
        assert await mq.requeue_dead_letters(MAX_DEAD_LETTER_BATCH) == 0

    async def test_a_stored_body_nested_too_deep_is_dead_lettered_raw(
        self, make_queue: MakeQueue, backend: Backend, contract_queue_name: str
    ) -> None:
        # Bytes nobody could publish through the API (another writer, a damaged key):
        # decoding them must not blow the stack of the worker or of dead_letters().
        mq = make_queue()
        ok = asyncio.Event()

        @mq.handler("job")
        async def job(msg: Message) -> None:
            ok.set()

        body = b"[" * 100_000 + b"]" * 100_000
        raw = backend.work_queue(contract_queue_name, WorkQueueOptions())
        await raw.enqueue([StoredMessage(id="deep1", type="job", priority=1, body=body)])
        await mq.publish(Message(type="job"))
        async with mq:
            await asyncio.wait_for(ok.wait(), 10)
            await eventually(mq.dead_letter_count)
        [dead] = await mq.dead_letters()
        assert dead.id == "deep1" and dead.message is None and dead.raw == body
        assert "nested too deeply" in dead.error
        assert await mq.requeue_dead_letters() == 1
        assert await mq.queue_length() == 1

    async def test_batch_is_all_or_nothing(self, make_queue: MakeQueue) -> None:
        mq = make_queue()
        good = [Message(type="t", payload={"i": i}) for i in range(3)]
        bad = Message(type="t", payload={"blob": b"bytes"})
        with pytest.raises(SerializationError) as info:
            await mq.publish_batch([*good, bad])
        assert info.value.field == "messages[3].payload.blob"
        assert await mq.queue_length() == 0
        ids = await mq.publish_batch(good)
        assert ids == [m.id for m in good]
        assert await mq.queue_length() == 3
        assert await mq.publish_batch([]) == []

    async def test_batch_of_thousands_of_types_is_stored_whole(
        self, make_queue: MakeQueue
    ) -> None:
        # One type per message: a script that unpacked every type name at once failed
        # here after storing every body, which nothing could see or remove.
        mq = make_queue()
        n = 9000
        sent = [Message(type=f"t{i}", payload={"i": i}) for i in range(n)]
        assert await mq.publish_batch(sent) == [m.id for m in sent]
        assert await mq.queue_length() == n
        assert (await mq.stats())["total_published"] == n
        seen: list[int] = []
        for name in ("t0", "t4500", "t8999"):

            @mq.handler(name)
            async def job(msg: Message) -> None:
                seen.append(msg.payload["i"])

        async with mq:
            await eventually(lambda: len(seen) == 3)
        assert sorted(seen) == [0, 4500, 8999]
        assert await mq.queue_length() == n - 3

    async def test_a_thousand_concurrent_publishes_are_all_stored(
        self, make_queue: MakeQueue
    ) -> None:
        # At the backend's default pool size: concurrent publishes must neither each
        # need a connection of their own nor fail when the pool is taken.
        mq = make_queue()
        sent = [Message(type="t", payload={"i": i}) for i in range(1000)]
        ids = await asyncio.gather(*(mq.publish(m) for m in sent))
        assert ids == [m.id for m in sent]
        assert len(set(ids)) == 1000
        assert await mq.queue_length() == 1000
        assert (await mq.stats())["total_published"] == 1000
        batch = [Message(type="t") for _ in range(5)]
        # Batches published concurrently stay whole and separate.
        batch_ids = await asyncio.gather(*(mq.publish_batch([m]) for m in batch))
        assert batch_ids == [[m.id] for m in batch]
        assert await mq.queue_length() == 1005

    async def test_among_concurrent_publishes_each_caller_gets_its_own_answer(
        self, make_queue: MakeQueue
    ) -> None:
        mq = make_queue()
        held = Message(type="t", dedup_key="k")
        taken = Message(type="t")
        assert await mq.publish(held) == held.id
        assert await mq.publish(taken) == taken.id
        plain = [Message(type="t", payload={"i": i}) for i in range(50)]
        again = Message(type="t", dedup_key="k")  # a dedup hit: the holder's id
        same_id = Message(id=taken.id, type="t", payload={"other": 1})  # the id is taken
        bad = Message(type="t", payload={"blob": b"bytes"})  # refused, alone
        calls = [mq.publish(m) for m in plain[:25]]
        calls += [mq.publish(again), mq.publish(same_id), mq.publish(bad)]
        calls += [mq.publish(m) for m in plain[25:]]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert results[:25] == [m.id for m in plain[:25]]
        assert results[25] == held.id
        assert results[26] == taken.id
        assert isinstance(results[27], SerializationError)
        assert results[28:] == [m.id for m in plain[25:]]
        assert await mq.queue_length() == 52  # held, taken and the fifty
        assert (await mq.stats())["total_published"] == 52

    # -- ordering ----------------------------------------------------------------------

    async def test_strict_priority_then_fifo(self, make_queue: MakeQueue) -> None:
        mq = make_queue(workers=1)
        order: list[tuple[int, int]] = []
        done = asyncio.Event()
        plan = [Priority.LOW, Priority.NORMAL, Priority.CRITICAL, Priority.HIGH] * 3

        @mq.handler("job")
        async def job(msg: Message) -> None:
            order.append((msg.priority, msg.payload["i"]))
            if len(order) == len(plan):
                done.set()

        await mq.publish_batch(
            [Message(type="job", priority=p, payload={"i": i}) for i, p in enumerate(plan)]
        )
        async with mq:
            await asyncio.wait_for(done.wait(), 10)
        expected = sorted(((int(p), i) for i, p in enumerate(plan)), key=lambda x: (-x[0], x[1]))
        assert order == expected

    async def test_higher_priority_published_later_overtakes(self, make_queue: MakeQueue) -> None:
        mq = make_queue(workers=1)
        gate = asyncio.Event()
        order: list[str] = []
        done = asyncio.Event()

        @mq.handler("job")
        async def job(msg: Message) -> None:
            order.append(msg.payload["name"])
            if msg.payload["name"] == "first":
                await gate.wait()
            if len(order) == 4:
                done.set()

        await mq.publish(Message(type="job", payload={"name": "first"}))
        async with mq:
            await eventually(lambda: order == ["first"])
            await mq.publish(Message(type="job", payload={"name": "low"}, priority="low"))
            await mq.publish(Message(type="job", payload={"name": "normal"}))
            await mq.publish(Message(type="job", payload={"name": "crit"}, priority=3))
            gate.set()
            await asyncio.wait_for(done.wait(), 10)
        assert order == ["first", "crit", "normal", "low"]

    # -- failures, retries, dead letters -----------------------------------------------

    async def test_retry_with_backoff_then_dead_letter(self, make_queue: MakeQueue) -> None:
        mq = make_queue()
        attempts: list[int] = []

        @mq.handler("boom")
        async def boom(msg: Message) -> None:
            attempts.append(msg.attempt)
            raise RuntimeError(f"bad attempt {msg.attempt}")

        sent = Message(type="boom", payload={"k": "v"}, max_retries=2)
        await mq.publish(sent)
        async with mq:
            await eventually(mq.dead_letter_count)
        assert attempts == [1, 2, 3]
        [dead] = await mq.dead_letters()
        assert dead.id == sent.id and dead.attempts == 3
        assert "RuntimeError: bad attempt 3" in dead.error
        assert "RuntimeError" in dead.traceback
        assert dead.message is not None and dead.message.payload == {"k": "v"}
        assert dead.failed_at == pytest.approx(time.time(), abs=60)
        stats = await mq.stats()
        assert stats["total_failed"] == 3
        assert stats["total_retried"] == 2
        assert stats["total_dead_letter"] == 1
        assert stats["dead_letter_count"] == 1
        assert stats["queue_length"]["total"] == 0 and stats["processing_count"] == 0

    async def test_retry_then_success(self, make_queue: MakeQueue) -> None:
        mq = make_queue()
        attempts: list[int] = []
        done = asyncio.Event()

        @mq.handler("flaky")
        def flaky(msg: Message) -> None:  # a plain function runs in a thread
            attempts.append(msg.attempt)
            if msg.attempt < 3:
                raise ValueError("not yet")
            done.set()

        await mq.publish(Message(type="flaky", max_retries=5))
        async with mq:
            await asyncio.wait_for(done.wait(), 10)
            await eventually(lambda: _processed(mq, 1))
        assert attempts == [1, 2, 3]
        assert await mq.dead_letter_count() == 0

    async def test_backoff_is_scheduled_in_the_backend_not_slept(
        self, make_queue: MakeQueue
    ) -> None:
        # One worker slot and a 60 s backoff: if the worker slept through the backoff, the
        # second message could not run until then.
        mq = make_queue(workers=1, retry_backoff_base="60s", retry_backoff_max="60s")
        failed = asyncio.Event()
        other_done = asyncio.Event()

        @mq.handler("flaky")
        async def flaky(msg: Message) -> None:
            failed.set()
            raise RuntimeError("try later")

        @mq.handler("other")
        async def other(msg: Message) -> None:
            other_done.set()

        await mq.publish(Message(type="flaky", max_retries=1))
        async with mq:
            await asyncio.wait_for(failed.wait(), 10)
            await mq.publish(Message(type="other"))
            await asyncio.wait_for(other_done.wait(), 10)
            await eventually(lambda: _stat(mq, "total_retried", 1))
            stats = await mq.stats()
            assert stats["queue_length"]["total"] == 1  # the retry waits, scheduled
            assert stats["in_flight"] == 0 and stats["processing_count"] == 0

    async def test_idle_worker_waits_instead_of_spinning(
        self, make_queue: MakeQueue, backend: Backend
    ) -> None:
        # Some clients (fakeredis) return from blocking reads at once; an idle worker
        # must still sleep between checks rather than hammer the backend.
        recording = RecordingBackend(backend)
        mq = make_queue(via=recording, poll_interval="100ms")

        @mq.handler("never")
        async def never(msg: Message) -> None:
            pass

        async with mq:
            await asyncio.sleep(0.5)  # the point of the test: half a second of idleness
        # 0.5 s / 100 ms = 5 polls, plus the first; a spinning loop makes thousands.
        calls = recording.count("exchange")
        assert 1 <= calls <= 15, calls

    async def test_a_worker_rides_out_any_backend_error_of_its_exchange(
        self, make_queue: MakeQueue, backend: Backend
    ) -> None:
        # A backend error fails one round, not the worker, whether the backend translated
        # it (BackendUnavailableError) or let a driver's own error through (a bug).
        recording = RecordingBackend(backend)
        mq = make_queue(via=recording)
        seen: list[str] = []

        @mq.handler("job")
        async def job(msg: Message) -> None:
            seen.append(msg.id)

        ids = await mq.publish_batch([Message(type="job") for _ in range(3)])
        recording.fail("exchange", BackendUnavailableError("staged", backend=backend.name))
        recording.fail("exchange", RuntimeError("a driver error nobody translated"))
        async with mq:
            await eventually(lambda: sorted(seen) == sorted(ids))
        assert recording.count("exchange") >= 3  # two failed rounds, then the claim

    async def test_requeue_dead_letters_resets_attempts(self, make_queue: MakeQueue) -> None:
        mq = make_queue()
        fail = True
        seen: list[int] = []

        @mq.handler("job")
        async def job(msg: Message) -> None:
            seen.append(msg.attempt)
            if fail:
                raise RuntimeError("down")

        await mq.publish(Message(type="job", max_retries=0))
        async with mq:
            await eventually(mq.dead_letter_count)
            fail = False
            assert await mq.requeue_dead_letters(10) == 1
            await eventually(lambda: _processed(mq, 1))
        assert seen == [1, 1]
        assert await mq.dead_letter_count() == 0

    async def test_dead_letter_disabled_drops_and_counts(self, make_queue: MakeQueue) -> None:
        mq = make_queue(enable_dead_letter_queue=False, max_retries=1)
        calls: list[int] = []

        @mq.handler("job")
        async def job(msg: Message) -> None:
            calls.append(msg.attempt)
            raise RuntimeError("nope")

        await mq.publish(Message(type="job"))
        async with mq:
            await eventually(lambda: _stat(mq, "total_dropped", 1))
        assert calls == [1, 2]
        assert await mq.dead_letter_count() == 0
        assert await mq.queue_length() == 0

    async def test_handler_timeout_cancels_and_counts_as_failure(
        self, make_queue: MakeQueue
    ) -> None:
        mq = make_queue()
        cancelled = asyncio.Event()

        @mq.handler("slow")
        async def slow(msg: Message) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        await mq.publish(Message(type="slow", timeout=0.05, max_retries=0))
        async with mq:
            await eventually(mq.dead_letter_count)
        assert cancelled.is_set()
        [dead] = await mq.dead_letters()
        assert "0.05s" in dead.error

    async def test_worker_survives_every_kind_of_failure(self, make_queue: MakeQueue) -> None:
        mq = make_queue(workers=2, max_retries=0)
        ok = asyncio.Event()

        class Weird(BaseException):
            pass

        @mq.handler("raise")
        async def raises(msg: Message) -> None:
            raise {"value": ValueError, "base": Weird}[msg.payload["kind"]]("x")

        @mq.handler("sync_raise")
        def sync_raises(msg: Message) -> None:
            raise KeyError("k")

        @mq.handler("ok")
        async def fine(msg: Message) -> None:
            ok.set()

        await mq.publish_batch(
            [
                Message(type="raise", payload={"kind": "value"}),
                Message(type="raise", payload={"kind": "base"}),
                Message(type="sync_raise"),
            ]
        )
        async with mq:
            await eventually(lambda: _dead(mq, 3))
            await mq.publish(Message(type="ok"))
            await asyncio.wait_for(ok.wait(), 10)
        errors = sorted(d.error.split(":")[0] for d in await mq.dead_letters())
        assert errors == ["KeyError", "ValueError", "Weird"]

    async def test_sync_handler_raising_stop_iteration_frees_its_slot(
        self, make_queue: MakeQueue
    ) -> None:
        # StopIteration cannot cross a Future: once it left the slot busy forever.
        mq = make_queue(workers=2, max_retries=0)
        ran: list[str] = []

        @mq.handler("bad")
        def bad(msg: Message) -> None:
            raise StopIteration

        @mq.handler("ok")
        def ok(msg: Message) -> None:
            ran.append(msg.id)

        await mq.publish_batch([Message(type="bad"), Message(type="bad")])
        await mq.publish_batch([Message(type="ok") for _ in range(10)])
        await mq.start()
        await eventually(lambda: len(ran) == 10)
        await eventually(lambda: _dead(mq, 2))
        assert all("StopIteration" in d.error for d in await mq.dead_letters())
        await asyncio.wait_for(mq.stop(), 10)

    async def test_system_exit_and_generator_exit_are_failed_attempts(
        self, make_queue: MakeQueue
    ) -> None:
        # A handler cannot end the worker: a poison message calling sys.exit() would
        # take down every worker that picks it up (and with status 0).
        mq = make_queue(workers=2, max_retries=0)
        ok = asyncio.Event()

        @mq.handler("exit_async")
        async def exit_async(msg: Message) -> None:
            raise SystemExit(0)

        @mq.handler("exit_sync")
        def exit_sync(msg: Message) -> None:
            raise SystemExit(3)

        @mq.handler("genexit")
        def genexit(msg: Message) -> None:
            raise GeneratorExit

        @mq.handler("ok")
        async def fine(msg: Message) -> None:
            ok.set()

        await mq.publish_batch([Message(type=t) for t in ("exit_async", "exit_sync", "genexit")])
        async with mq:
            await eventually(lambda: _dead(mq, 3))
            await mq.publish(Message(type="ok"))
            await asyncio.wait_for(ok.wait(), 10)
        errors = sorted(d.error for d in await mq.dead_letters())
        assert errors == ["GeneratorExit: ", "SystemExit: 0", "SystemExit: 3"]

    async def test_stuck_sync_handlers_do_not_charge_messages_that_never_ran(
        self, make_queue: MakeQueue
    ) -> None:
        # As many stuck plain handlers as asyncio's default executor has threads: they
        # once took them all, and every later plain message timed out unstarted.
        stuck_n = min(32, (os.cpu_count() or 1) + 4)
        mq = make_queue(workers=stuck_n + 2, sync_handler_threads=stuck_n, max_retries=0)
        release = threading.Event()
        started = 0
        ran: list[int] = []
        probes: list[str] = []

        @mq.handler("stuck")
        def stuck(msg: Message) -> None:
            nonlocal started
            started += 1
            release.wait(30)

        @mq.handler("quick")
        def quick(msg: Message) -> None:
            ran.append(msg.retry_count)

        @mq.handler("probe")
        async def probe(msg: Message) -> None:
            probes.append(msg.id)

        try:
            await mq.publish_batch([Message(type="stuck", timeout=0.2) for _ in range(stuck_n)])
            async with mq:
                await eventually(lambda: _dead(mq, stuck_n))
                stats = await mq.stats()
                assert stats["sync_threads"] == stuck_n
                assert stats["sync_threads_abandoned"] == stuck_n
                await mq.publish_batch([Message(type="quick", timeout=0.2) for _ in range(20)])
                # Async work still flows; by the time this delayed probe ran, a quick
                # message timed from its submission would have been dead-lettered.
                await mq.publish(Message(type="probe"), delay=0.5)
                await eventually(lambda: len(probes) == 1)
                assert ran == []
                assert await mq.dead_letter_count() == stuck_n
                release.set()
                await eventually(lambda: len(ran) == 20)
                assert ran == [0] * 20  # each ran on its first, uncharged attempt
                assert await mq.dead_letter_count() == stuck_n
                await eventually(lambda: _abandoned(mq, 0))
        finally:
            release.set()
        assert started == stuck_n

    async def test_stop_does_not_wait_for_a_stuck_plain_handler(
        self, make_queue: MakeQueue, contract_queue_name: str
    ) -> None:
        # Python cannot stop the thread: stop() releases the message uncharged after its
        # grace and returns; the thread is a daemon, left to finish on its own.
        mq = make_queue(workers=1)
        release = threading.Event()
        started = asyncio.Event()
        loop = asyncio.get_running_loop()

        @mq.handler("stuck")
        def stuck(msg: Message) -> None:
            loop.call_soon_threadsafe(started.set)
            release.wait(30)

        try:
            await mq.publish(Message(type="stuck"))
            await mq.start()
            await asyncio.wait_for(started.wait(), 10)
            await asyncio.wait_for(mq.stop(grace=0.05), 10)
            assert await mq.queue_length() == 1  # handed back
            assert await mq.processing_count() == 0
            prefix = f"meetq-{contract_queue_name}-sync"
            pool = [t for t in threading.enumerate() if t.name.startswith(prefix)]
            assert pool and all(t.daemon for t in pool)
        finally:
            release.set()
        after = make_queue()
        attempts: list[int] = []

        @after.handler("stuck")
        async def again(msg: Message) -> None:
            attempts.append(msg.attempt)

        async with after:
            await eventually(lambda: attempts == [1])  # the stuck run was not charged

    async def test_after_the_manager_stopped_every_call_raises_closed_error(
        self, meetq_config: MeetqConfig, backend: Backend
    ) -> None:
        # One rule on every backend: qm.stop() closes the backends, and a closed backend
        # refuses every call (memory once went on accepting publishes and answering).
        qm = QueueManager(meetq_config, lambda name: backend)
        mq = qm.get_message_queue()
        assert mq is not None
        done = asyncio.Event()

        @mq.handler("job")
        async def job(msg: Message) -> None:
            done.set()

        async with qm:
            await mq.publish(Message(type="job"))
            await asyncio.wait_for(done.wait(), 10)
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "publish": lambda: mq.publish(Message(type="job")),
            "publish_batch": lambda: mq.publish_batch([Message(type="job")]),
            "queue_length": mq.queue_length,
            "processing_count": mq.processing_count,
            "dead_letter_count": mq.dead_letter_count,
            "dead_letters": mq.dead_letters,
            "requeue_dead_letters": mq.requeue_dead_letters,
            "clear": mq.clear,
            "clear_dead_letters": mq.clear_dead_letters,
            "stats": mq.stats,
            "qm.stats": qm.stats,
            "qm.start": qm.start,
            "mq.start": mq.start,
        }
        for name, call in calls.items():
            with pytest.raises(ClosedError):
                await call()
                pytest.fail(f"{name} after qm.stop() did not raise ClosedError")
        pubsub = qm.get_pubsub()
        if pubsub is not None:
            with pytest.raises(ClosedError):
                await pubsub.publish("c", PubSubMessage(type="t"))
        await qm.stop()  # still harmless

    async def test_handler_raising_cancelled_error_is_a_failed_attempt(
        self, make_queue: MakeQueue
    ) -> None:
        # A handler that awaited something another task cancelled raises CancelledError
        # without being stopped: that attempt failed; it must not be handed back uncharged
        # (which would loop forever) nor stop the worker.
        mq = make_queue(max_retries=1)
        attempts: list[int] = []
        ok = asyncio.Event()

        @mq.handler("victim")
        async def victim(msg: Message) -> None:
            attempts.append(msg.attempt)
            doomed = asyncio.ensure_future(asyncio.Event().wait())
            doomed.cancel()
            await doomed

        @mq.handler("ok")
        async def fine(msg: Message) -> None:
            ok.set()

        await mq.publish(Message(type="victim"))
        async with mq:
            await eventually(mq.dead_letter_count)
            await mq.publish(Message(type="ok"))
            await asyncio.wait_for(ok.wait(), 10)
        assert attempts == [1, 2]
        [dead] = await mq.dead_letters()
        assert "CancelledError" in dead.error

    async def test_handlers_own_timeout_error_is_an_ordinary_failure(
        self, make_queue: MakeQueue
    ) -> None:
        # No handler timeout configured; the handler's HTTP/socket TimeoutError is its
        # own failure: retried, then dead-lettered with its text, and the worker goes on.
        mq = make_queue(workers=1, max_retries=1)
        ok = asyncio.Event()

        @mq.handler("fetch")
        async def fetch(msg: Message) -> None:
            raise TimeoutError("upstream did not answer")

        @mq.handler("ok")
        async def fine(msg: Message) -> None:
            ok.set()

        await mq.publish(Message(type="fetch"))
        async with mq:
            await eventually(mq.dead_letter_count)
            await mq.publish(Message(type="ok"))
            await asyncio.wait_for(ok.wait(), 10)
            stats = await mq.stats()
        [dead] = await mq.dead_letters()
        assert dead.attempts == 2 and "upstream did not answer" in dead.error
        assert stats["handler_timeouts"] == 0

    async def test_prefetch_never_runs_more_than_workers_at_once(
        self, make_queue: MakeQueue
    ) -> None:
        mq = make_queue(workers=2, prefetch=8)
        running = 0
        peak = 0
        gate = asyncio.Event()

        @mq.handler("job")
        async def job(msg: Message) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await gate.wait()
            running -= 1

        await mq.publish_batch([Message(type="job") for _ in range(8)])
        async with mq:
            await eventually(lambda: _stat(mq, "processing_count", 8))  # all 8 leased
            assert running == 2
            gate.set()
            await eventually(lambda: _processed(mq, 8))
        assert peak == 2

    async def test_without_workers_async_handlers_are_not_capped_at_four(
        self, make_queue: MakeQueue
    ) -> None:
        # I/O-bound async handlers: the default keeps many in flight at once.
        mq = make_queue()
        n = MessageQueueConfig.DEFAULT_ASYNC_WORKERS
        running = 0
        gate = asyncio.Event()

        @mq.handler("job")
        async def job(msg: Message) -> None:
            nonlocal running
            running += 1
            await gate.wait()
            running -= 1

        await mq.publish_batch([Message(type="job") for _ in range(n + 5)])
        async with mq:
            await eventually(lambda: running == n)
            assert (await mq.stats())["workers"] == n
            assert await mq.processing_count() == n  # no more leased than run
            gate.set()
            await eventually(lambda: _processed(mq, n + 5))

    async def test_without_workers_plain_handlers_are_bounded_by_their_threads(
        self, make_queue: MakeQueue
    ) -> None:
        mq = make_queue(sync_handler_threads=3)
        release = threading.Event()
        running = 0
        peak = 0
        lock = threading.Lock()

        @mq.handler("job")
        def job(msg: Message) -> None:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            release.wait(10)
            with lock:
                running -= 1

        await mq.publish_batch([Message(type="job") for _ in range(8)])
        try:
            async with mq:
                await eventually(lambda: running == 3)
                stats = await mq.stats()
                assert (stats["workers"], stats["sync_threads"]) == (3, 3)
                release.set()
                await eventually(lambda: _processed(mq, 8))
        finally:
            release.set()
        assert peak == 3

    async def test_explicit_workers_four_means_four(self, make_queue: MakeQueue) -> None:
        mq = make_queue(workers=4)
        running = 0
        peak = 0
        gate = asyncio.Event()

        @mq.handler("job")
        async def job(msg: Message) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await gate.wait()
            running -= 1

        await mq.publish_batch([Message(type="job") for _ in range(10)])
        async with mq:
            await eventually(lambda: running == 4)
            assert await mq.processing_count() == 4
            gate.set()
            await eventually(lambda: _processed(mq, 10))
        assert peak == 4

    async def test_stop_rejects_a_bad_grace_and_still_stops(self, make_queue: MakeQueue) -> None:
        mq = make_queue()

        @mq.handler("job")
        async def job(msg: Message) -> None:
            pass

        await mq.start()
        with pytest.raises(ValidationError) as info:
            await mq.stop(grace=-1)
        assert info.value.field == "grace"
        await mq.stop(grace=1)
        assert all(task.done() for task in mq._tasks)

    async def test_claims_in_flight_when_stop_begins_are_handed_back(
        self, make_queue: MakeQueue, backend: Backend
    ) -> None:
        # An exchange already on the wire when stop() starts may still return messages:
        # they go back uncharged rather than to handlers stop() no longer waits for.
        recording = RecordingBackend(backend)
        mq = make_queue(via=recording)
        ran: list[int] = []
        holding = asyncio.Event()
        release = asyncio.Event()

        async def slow_exchange(exchange: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            result = await exchange(*args, **kwargs)
            if result.claimed:
                holding.set()
                await release.wait()
            return result

        recording.around("exchange", slow_exchange)

        @mq.handler("job")
        async def job(msg: Message) -> None:
            ran.append(msg.attempt)

        await mq.start()
        await mq.publish(Message(type="job"))
        await asyncio.wait_for(holding.wait(), 10)
        stopping = asyncio.ensure_future(mq.stop(grace=5))
        await eventually(lambda: not mq._claiming)
        release.set()
        await asyncio.wait_for(stopping, 10)
        recording.around("exchange", None)
        assert ran == []
        assert await mq.processing_count() == 0 and await mq.queue_length() == 1

        after = make_queue()
        attempts: list[int] = []

        @after.handler("job")
        async def again(msg: Message) -> None:
            attempts.append(msg.attempt)

        async with after:
            await eventually(lambda: attempts == [1])

    async def test_undecodable_message_is_dead_lettered_raw(
        self, make_queue: MakeQueue, backend: Backend, contract_queue_name: str
    ) -> None:
        mq = make_queue()
        ok = asyncio.Event()

        @mq.handler("job")
        async def job(msg: Message) -> None:
            ok.set()

        raw = backend.work_queue(contract_queue_name, WorkQueueOptions())
        await raw.enqueue([StoredMessage(id="bad1", type="job", priority=1, body=b"\xff{not json")])
        await mq.publish(Message(type="job"))
        async with mq:
            await asyncio.wait_for(ok.wait(), 10)
            await eventually(mq.dead_letter_count)
        [dead] = await mq.dead_letters()
        assert dead.id == "bad1" and dead.message is None and dead.raw == b"\xff{not json"
        assert "undecodable" in dead.error

    async def test_dead_letter_queue_is_capped(self, make_queue: MakeQueue) -> None:
        mq = make_queue(max_retries=0, dead_letter_max_size=3, workers=1)

        @mq.handler("job")
        async def job(msg: Message) -> None:
            raise RuntimeError(str(msg.payload["i"]))

        await mq.publish_batch([Message(type="job", payload={"i": i}) for i in range(5)])
        async with mq:
            await eventually(lambda: _stat(mq, "total_dead_letter", 5))
        kept = [d.message.payload["i"] for d in await mq.dead_letters() if d.message]
        assert kept == [2, 3, 4]
        assert await mq.clear_dead_letters() == 3
        assert await mq.dead_letter_count() == 0

    async def test_one_queue_has_one_set_of_dead_letter_limits(self, make_queue: MakeQueue) -> None:
        make_queue(dead_letter_max_size=10)
        make_queue(dead_letter_max_size=10)  # the same limits: fine
        with pytest.raises(ValidationError) as info:
            make_queue(dead_letter_max_size=20)
        assert info.value.field == "dead_letter_max_size" and info.value.value == 20

    async def test_dead_letters_expire_by_age(self, make_queue: MakeQueue) -> None:
        mq = make_queue(max_retries=0, dead_letter_max_age="300ms")

        @mq.handler("job")
        async def job(msg: Message) -> None:
            raise RuntimeError("x")

        await mq.publish(Message(type="job"))
        async with mq:
            await eventually(mq.dead_letter_count)
            # Aged out: no longer listed, counted or requeueable; the total stays.
            await eventually(lambda: _dead(mq, 0))
            assert await mq.dead_letters() == []
            assert await mq.requeue_dead_letters(10) == 0
            assert (await mq.stats())["total_dead_letter"] == 1

    # -- leases ------------------------------------------------------------------------

    async def test_lease_is_renewed_while_handler_runs(self, make_queue: MakeQueue) -> None:
        # The handler runs 3x the visibility timeout while a second worker polls the
        # same queue: the message must be neither re-delivered nor duplicated.
        first = make_queue(visibility_timeout="200ms")
        second = make_queue(visibility_timeout="200ms")
        runs: list[str] = []

        async def slow(msg: Message) -> None:
            runs.append("run")
            await asyncio.sleep(0.6)  # the point of the test: outlive the lease 3x

        first.register_handler("slow", slow)
        second.register_handler("slow", slow)
        await first.publish(Message(type="slow"))
        async with first, second:
            await eventually(lambda: _processed(first, 1))
            assert runs == ["run"]
            assert (await first.stats())["lease_lost"] == 0
            assert (await second.stats())["lease_lost"] == 0
        assert await first.dead_letter_count() == 0

    async def test_expired_lease_redelivers_and_late_settlement_is_refused(
        self, backend: Backend, make_queue: MakeQueue, contract_queue_name: str
    ) -> None:
        raw = backend.work_queue(contract_queue_name, WorkQueueOptions())
        mq = make_queue(visibility_timeout="2s")
        await mq.publish(Message(type="job"))
        stuck = await raw.exchange([], types=["job"], claim=1, lease_ms=50)
        [old] = stuck.claimed
        assert old.attempt == 1
        seen: list[int] = []
        release = asyncio.Event()

        @mq.handler("job")
        async def job(msg: Message) -> None:
            seen.append(msg.attempt)
            await release.wait()

        async with mq:
            await eventually(lambda: seen == [2])
            # The stuck worker wakes up and acks with its stale token: refused.
            late = LeaseRef(id=old.id, type=old.type, token=old.token)
            result = await raw.exchange(
                [Settlement(lease=late, outcome="ack")], types=["job"], claim=0, lease_ms=50
            )
            assert result.settled == [False]
            assert await raw.extend([late], 1000) == [False]
            assert await mq.processing_count() == 1
            release.set()
            await eventually(lambda: _processed(mq, 1))
        assert seen == [2]

    async def test_release_keeps_position_and_attempt(
        self, backend: Backend, make_queue: MakeQueue, contract_queue_name: str
    ) -> None:
        raw = backend.work_queue(contract_queue_name, WorkQueueOptions())
        mq = make_queue()
        await mq.publish_batch([Message(type="job", payload={"i": i}) for i in range(3)])
        got = await raw.exchange([], types=["job"], claim=1, lease_ms=5000)
        [first] = got.claimed
        lease = LeaseRef(id=first.id, type=first.type, token=first.token)
        back = await raw.exchange(
            [Settlement(lease=lease, outcome="release")], types=["job"], claim=1, lease_ms=5000
        )
        assert back.settled == [True]
        assert [c.id for c in back.claimed] == [first.id]
        assert back.claimed[0].attempt == 1

    async def test_counters_follow_the_policy_core_hands_over(self, backend: Backend) -> None:
        # The outcome-to-counter rule is core's (WorkQueueOptions.outcome_counters): a
        # backend applies what it is given instead of a table of its own.
        policy = {**OUTCOME_COUNTERS, "ack": ("processed", "retried"), "drop": ()}
        raw = backend.work_queue("policy", WorkQueueOptions(outcome_counters=policy))
        await raw.enqueue(
            [StoredMessage(id=f"p{i}", type="job", priority=1, body=b"{}") for i in range(2)]
        )
        got = await raw.exchange([], types=["job"], claim=2, lease_ms=5000)
        first, second = (LeaseRef(id=c.id, type=c.type, token=c.token) for c in got.claimed)
        settlements = [
            Settlement(lease=first, outcome="ack"),
            Settlement(lease=second, outcome="drop"),
        ]
        done = await raw.exchange(settlements, types=["job"], claim=0, lease_ms=5000)
        assert done.settled == [True, True]
        snapshot = await raw.inspect()
        assert snapshot.counters == {
            "published": 2,
            "processed": 1,
            "failed": 0,
            "retried": 1,
            "dead_letter": 0,
            "dropped": 0,
        }
        assert snapshot.processing == 0 and sum(snapshot.waiting.values()) == 0

    async def test_the_unhandled_sweep_writes_the_reason_core_gives(self, backend: Backend) -> None:
        raw = backend.work_queue("sweep", WorkQueueOptions())
        await raw.enqueue([StoredMessage(id="s1", type="orphan", priority=2, body=b"{}")])
        assert (await raw.inspect()).unhandled == 1
        sweep = Maintenance(
            action="sweep_unhandled", limit=10, unhandled_timeout_ms=0, reason="gone: {type!r}"
        )
        assert await raw.maintain(sweep) == 1
        [dead] = await raw.dead_letters(10)
        assert (dead.id, dead.error) == ("s1", "gone: 'orphan'")
        snapshot = await raw.inspect()
        assert (snapshot.dead, snapshot.unhandled, snapshot.counters["dead_letter"]) == (1, 0, 1)

    # -- scheduling --------------------------------------------------------------------

    async def test_delayed_delivery(self, make_queue: MakeQueue) -> None:
        mq = make_queue()
        started = time.monotonic()
        ran_at: list[float] = []
        done = asyncio.Event()

        @mq.handler("later")
        async def later(msg: Message) -> None:
            ran_at.append(time.monotonic())
            done.set()

        await mq.publish(Message(type="later"), delay=0.3)
        await mq.publish(Message(type="later"), not_before=time.time() + 0.3)
        assert await mq.queue_length() == 2
        async with mq:
            await asyncio.wait_for(done.wait(), 10)
            await eventually(lambda: len(ran_at) == 2)
        assert min(ran_at) - started >= 0.29

    async def test_push_wakeup_not_polling(self, make_queue: MakeQueue) -> None:
        # poll_interval is a fallback bound only: with it at 60 s, a publish to an idle
        # queue must still start its handler at once.
        mq = make_queue(poll_interval="60s")
        done = asyncio.Event()

        @mq.handler("ping")
        async def ping(msg: Message) -> None:
            done.set()

        async with mq:
            await eventually(lambda: _idle(mq))
            await mq.publish(Message(type="ping"))
            await asyncio.wait_for(done.wait(), 5)

    async def test_dedup_key(self, make_queue: MakeQueue) -> None:
        mq = make_queue()
        gate = asyncio.Event()
        runs: list[str] = []

        @mq.handler("job")
        async def job(msg: Message) -> None:
            runs.append(msg.id)
            await gate.wait()

        first = await mq.publish(Message(type="job", dedup_key="k1"))
        assert await mq.publish(Message(type="job", dedup_key="k1")) == first
        batch = await mq.publish_batch(
            [Message(type="job", dedup_key="k2"), Message(type="job", dedup_key="k2")]
        )
        assert batch[0] == batch[1]
        assert await mq.queue_length() == 2
        async with mq:
            await eventually(lambda: len(runs) == 2)
            # Still running: a dedup hit.
            assert await mq.publish(Message(type="job", dedup_key="k1")) == first
            gate.set()
            await eventually(lambda: _processed(mq, 2))
            again = await mq.publish(Message(type="job", dedup_key="k1"))
            assert again != first
            await eventually(lambda: _processed(mq, 3))

    # -- several workers on one queue --------------------------------------------------

    async def test_unhandled_type_waits_for_a_worker_that_handles_it(
        self, make_queue: MakeQueue
    ) -> None:
        billing = make_queue(unhandled_timeout="60s")
        media = make_queue(unhandled_timeout="60s")
        got: list[str] = []

        @billing.handler("invoice")
        async def invoice(msg: Message) -> None:
            got.append("invoice")

        @media.handler("transcode")
        async def transcode(msg: Message) -> None:
            got.append("transcode")

        await billing.publish(Message(type="transcode"))
        async with billing:
            await eventually(lambda: _stat(billing, "unhandled_count", 1))
            assert await billing.dead_letter_count() == 0
            async with media:
                await eventually(lambda: got == ["transcode"])
        assert await billing.dead_letter_count() == 0

    async def test_unhandled_message_is_dead_lettered_after_timeout(
        self, make_queue: MakeQueue
    ) -> None:
        mq = make_queue(unhandled_timeout="200ms")

        @mq.handler("known")
        async def known(msg: Message) -> None:
            pass

        await mq.publish(Message(type="orphan"))
        # A type only ever published with a delay is swept too, once due and waited out.
        await mq.publish(Message(type="late_orphan"), delay=0.05)
        async with mq:
            await eventually(lambda: _dead(mq, 2))
        dead = await mq.dead_letters()
        assert sorted(d.type for d in dead) == ["late_orphan", "orphan"]
        assert all("no live worker" in d.error for d in dead)

    async def test_unhandled_wait_counts_from_when_the_last_handler_left(
        self, make_queue: MakeQueue
    ) -> None:
        # The only worker for "b" goes away; its backlog, ready for long already, must get
        # the full unhandled_timeout from then on (a restart must not cost it its work).
        sweeper = make_queue(unhandled_timeout="400ms")
        owner = make_queue(workers=1, unhandled_timeout="400ms")
        gate = asyncio.Event()

        @sweeper.handler("a")
        async def a(msg: Message) -> None:
            pass

        @owner.handler("b")
        async def b(msg: Message) -> None:
            await gate.wait()

        await owner.publish(Message(type="b", payload={"n": 1}))
        async with sweeper:
            await owner.start()
            await eventually(lambda: _stat(owner, "in_flight", 1))
            await owner.publish(Message(type="b", payload={"n": 2}))  # waits, ready
            await asyncio.sleep(0.6)  # longer than the timeout, with a live handler
            assert await sweeper.dead_letter_count() == 0
            await owner.stop(grace=0)
            left = time.monotonic()
            await eventually(lambda: _dead(sweeper, 2))
            assert time.monotonic() - left >= 0.4

    async def test_an_id_in_use_or_dead_lettered_is_not_stored_again(
        self, make_queue: MakeQueue
    ) -> None:
        mq = make_queue(max_retries=0)

        @mq.handler("job")
        async def job(msg: Message) -> None:
            raise RuntimeError("no")

        await mq.publish(Message(type="job", id="order-42", payload={"v": 1}))
        async with mq:
            await eventually(mq.dead_letter_count)
        # Publishing the same id again while its dead letter is kept stores nothing.
        again = await mq.publish(Message(type="job", id="order-42", payload={"v": 2}))
        assert again == "order-42" and await mq.queue_length() == 0
        [dead] = await mq.dead_letters()
        assert dead.message is not None and dead.message.payload == {"v": 1}
        assert await mq.clear_dead_letters() == 1
        await mq.publish(Message(type="job", id="order-42", payload={"v": 3}))
        assert await mq.queue_length() == 1

    # -- lifecycle ---------------------------------------------------------------------

    async def test_graceful_stop_releases_unfinished_without_charging(
        self, make_queue: MakeQueue
    ) -> None:
        mq = make_queue(workers=2)
        started = asyncio.Event()
        quick_done = asyncio.Event()

        @mq.handler("stuck")
        async def stuck(msg: Message) -> None:
            started.set()
            await asyncio.Event().wait()

        @mq.handler("quick")
        async def quick(msg: Message) -> None:
            await started.wait()
            quick_done.set()

        await mq.publish_batch([Message(type="stuck"), Message(type="quick")])
        await mq.start()
        await asyncio.wait_for(quick_done.wait(), 10)
        await mq.stop(grace=0.05)
        await mq.stop()  # twice is harmless
        assert await mq.processing_count() == 0
        assert await mq.queue_length() == 1
        assert (await mq.stats())["total_processed"] == 1
        # Publishing still works with no worker running.
        await mq.publish(Message(type="quick"))
        with pytest.raises(ClosedError):
            await mq.start()

        after = make_queue()
        attempts: list[int] = []

        @after.handler("stuck")
        async def again(msg: Message) -> None:
            attempts.append(msg.attempt)

        async with after:
            await eventually(lambda: attempts == [1])

    async def test_in_flight_handler_finishes_within_grace(self, make_queue: MakeQueue) -> None:
        mq = make_queue()
        started = asyncio.Event()
        finished = asyncio.Event()

        @mq.handler("job")
        async def job(msg: Message) -> None:
            started.set()
            await asyncio.sleep(0.05)
            finished.set()

        await mq.publish(Message(type="job"))
        await mq.start()
        await asyncio.wait_for(started.wait(), 10)
        await mq.stop(grace=10)
        assert finished.is_set()
        assert (await mq.stats())["total_processed"] == 1

    async def test_wait_idle_returns_once_nothing_is_ready_for_the_handlers(
        self, make_queue: MakeQueue
    ) -> None:
        # What `meetq worker --burst` waits for: every ready message of a handled type
        # taken and settled; a message not yet due or of another type does not count.
        mq = make_queue(workers=2)
        seen: list[str] = []

        @mq.handler("job")
        async def job(msg: Message) -> None:
            seen.append(msg.id)

        await asyncio.wait_for(mq.wait_idle(), 10)  # not started: consumes nothing
        ids = await mq.publish_batch([Message(type="job") for _ in range(7)])
        await mq.publish(Message(type="job"), delay=600)
        await mq.publish(Message(type="unhandled_here"))
        async with mq:
            await asyncio.wait_for(mq.wait_idle(), 10)
            assert sorted(seen) == sorted(ids)
            stats = await mq.stats()
            assert (stats["in_flight"], stats["processing_count"]) == (0, 0)
            assert stats["total_processed"] == 7
            assert await mq.queue_length() == 2
            # Idle again after new work came and went.
            late = await mq.publish(Message(type="job"))
            await eventually(lambda: late in seen)
            await asyncio.wait_for(mq.wait_idle(), 10)
            assert (await mq.stats())["total_processed"] == 8

    async def test_register_rules(self, make_queue: MakeQueue) -> None:
        mq = make_queue()

        async def h(msg: Message) -> None:
            pass

        mq.register_handler("a", h)
        with pytest.raises(ValidationError):
            mq.register_handler("a", h)
        with pytest.raises(ValidationError):
            mq.register_handler("b", "not callable")  # type: ignore[arg-type]
        await mq.start()
        with pytest.raises(ValidationError):
            mq.register_handler("c", h)

    async def test_stats_keys_and_clear(self, make_queue: MakeQueue) -> None:
        mq = make_queue()
        await mq.publish_batch([Message(type="t", priority=p) for p in Priority])
        stats = await mq.stats()
        for key in (
            "queue_name",
            "total_published",
            "total_processed",
            "total_failed",
            "total_retried",
            "total_dead_letter",
            "queue_length",
            "processing_count",
            "dead_letter_count",
            "workers",
        ):
            assert key in stats
        assert stats["queue_length"] == {
            "critical": 1,
            "high": 1,
            "normal": 1,
            "low": 1,
            "total": 4,
        }
        assert stats["total_published"] == 4
        assert await mq.clear() == 4
        assert await mq.queue_length() == 0

    async def test_many_messages_each_processed_once(self, make_queue: MakeQueue) -> None:
        first = make_queue(workers=8)
        second = make_queue(workers=3)
        seen: list[int] = []

        async def handle(msg: Message) -> None:
            seen.append(msg.payload["i"])

        first.register_handler("n", handle)
        second.register_handler("n", handle)
        total = 500
        await first.publish_batch([Message(type="n", payload={"i": i}) for i in range(total)])
        async with first, second:
            await eventually(lambda: _processed(first, total), timeout=30)
        assert sorted(seen) == list(range(total))
        assert await first.processing_count() == 0


async def _stat(mq: MessageQueue, key: str, value: int) -> bool:
    return bool((await mq.stats())[key] == value)


async def _processed(mq: MessageQueue, count: int) -> bool:
    return await _stat(mq, "total_processed", count)


async def _dead(mq: MessageQueue, count: int) -> bool:
    return await mq.dead_letter_count() == count


def _idle(mq: MessageQueue) -> bool:
    return not mq._kick.is_set() and not mq._running


async def _abandoned(mq: MessageQueue, count: int) -> bool:
    return bool((await mq.stats())["sync_threads_abandoned"] == count)
