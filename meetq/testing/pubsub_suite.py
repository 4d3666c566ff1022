"""Contract tests for ``PubSub`` on any backend.

Bind with a class that mixes ``PubSubContract`` in and overrides ``backend_config``::

    class TestMemoryPubSub(PubSubContract):
        @pytest.fixture
        def backend_config(self):
            return {"message_queue": {"type": "memory"}, "event_bus": {"type": "memory"}}

Every wait is on a condition with a generous timeout; nothing sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from meetq import PubSub
from meetq.core.config import MeetqConfig
from meetq.core.errors import (
    BackendUnavailableError,
    ClosedError,
    SerializationError,
    ValidationError,
)
from meetq.core.protocols import Backend, TransportMessage
from meetq.core.types import PubSubMessage
from meetq.testing._base import BackendContract
from meetq.testing._helpers import TIMEOUT, Collector, eventually, wait_until
from meetq.testing._recording import RecordingBackend

__all__ = ["PubSubContract"]

PubSubFactory = Callable[..., Awaitable[PubSub]]


class Gate:
    """An async handler that blocks on its first message until ``release()``."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.released = asyncio.Event()
        self.messages: list[PubSubMessage] = []

    async def __call__(self, message: PubSubMessage) -> None:
        self.messages.append(message)
        self.entered.set()
        await self.released.wait()

    def release(self) -> None:
        self.released.set()


def msg(kind: str = "evt", **payload: Any) -> PubSubMessage:
    return PubSubMessage(type=kind, payload=payload)


class PubSubContract(BackendContract):
    """Broadcast semantics every backend must give through ``meetq.PubSub``."""

    @pytest_asyncio.fixture
    async def make_pubsub(
        self, pubsub_backend: Backend, meetq_config: MeetqConfig
    ) -> AsyncIterator[PubSubFactory]:
        """Build (and start, unless ``start=False``) PubSub objects; all stopped at the end."""
        made: list[PubSub] = []

        async def make(
            *, start: bool = True, via: Backend | None = None, **overrides: Any
        ) -> PubSub:
            # `via`: the backend wrapped (a RecordingBackend) to stage a failure.
            ps = PubSub(via or pubsub_backend, meetq_config.event_bus, **overrides)
            made.append(ps)
            if start:
                await ps.start()
            return ps

        try:
            yield make
        finally:
            for ps in made:
                await ps.stop()

    # -- delivery -----------------------------------------------------------------------

    async def test_subscribe_then_publish_delivers_with_fields_filled(
        self, make_pubsub: PubSubFactory
    ) -> None:
        sub, pub = await make_pubsub(), await make_pubsub(source="svc-a")
        got = Collector()
        await sub.subscribe("meeting_events", got)
        sent = PubSubMessage(type="user_joined", payload={"user_id": 123, "meeting_id": 456})
        assert await pub.publish("meeting_events", sent) == 1
        [received] = await got.wait_for(1)
        assert received.type == "user_joined"
        assert dict(received.payload) == {"user_id": 123, "meeting_id": 456}
        assert received.id == sent.id and len(received.id) == 32
        assert received.timestamp == pytest.approx(sent.timestamp)
        assert received.source == "svc-a"
        assert received.channel == "meeting_events"

    async def test_default_source_and_explicit_source_kept(
        self, make_pubsub: PubSubFactory
    ) -> None:
        ps = await make_pubsub()
        got = Collector()
        await ps.subscribe("c", got)
        await ps.publish("c", msg("a"))
        await ps.publish("c", PubSubMessage(type="b", source="mine"))
        first, second = await got.wait_for(2)
        assert first.source == ps.source and ps.source
        assert second.source == "mine"

    async def test_publish_returns_receiving_connections(self, make_pubsub: PubSubFactory) -> None:
        a, b, pub = await make_pubsub(), await make_pubsub(), await make_pubsub()
        assert await pub.publish("room", msg()) == 0
        got_a1, got_a2, got_b = Collector(), Collector(), Collector()
        await a.subscribe("room", got_a1)
        # A second handler rides the same connection: still one receiver.
        await a.subscribe("room", got_a2)
        assert await pub.publish("room", msg("one")) == 1
        await b.subscribe("room", got_b)
        assert await pub.publish("room", msg("two")) == 2
        assert (await got_a1.wait_for(2))[-1].type == "two"
        assert [m.type for m in await got_a2.wait_for(2)] == ["one", "two"]
        assert [m.type for m in await got_b.wait_for(1)] == ["two"]

    async def test_publish_batch_in_order_with_counts(self, make_pubsub: PubSubFactory) -> None:
        sub, pub = await make_pubsub(), await make_pubsub()
        got = Collector()
        await sub.subscribe("batch", got)
        counts = await pub.publish_batch("batch", [msg(f"m{i}") for i in range(50)])
        assert counts == [1] * 50
        await got.wait_for(50)
        assert got.types == [f"m{i}" for i in range(50)]
        assert await pub.publish_batch("batch", []) == []
        assert (await pub.stats())["total_published"] == 50

    async def test_each_handler_gets_publish_order(self, make_pubsub: PubSubFactory) -> None:
        sub, pub = await make_pubsub(), await make_pubsub()
        fast, slow_order = Collector(), Collector()

        async def slow(message: PubSubMessage) -> None:
            await asyncio.sleep(0)  # yields mid-stream: order must survive interleaving
            await slow_order(message)

        await sub.subscribe("ordered", fast)
        await sub.subscribe("ordered", slow)
        for i in range(200):
            await pub.publish("ordered", msg(f"m{i}", i=i))
        expected = [f"m{i}" for i in range(200)]
        await fast.wait_for(200)
        await slow_order.wait_for(200)
        assert fast.types == expected
        assert slow_order.types == expected

    async def test_pubsub_plain_handler_runs_in_a_thread(self, make_pubsub: PubSubFactory) -> None:
        ps = await make_pubsub()
        loop_thread = threading.get_ident()
        seen: list[tuple[str, int]] = []
        done = asyncio.Event()
        loop = asyncio.get_running_loop()

        def plain(message: PubSubMessage) -> None:
            seen.append((message.type, threading.get_ident()))
            if len(seen) == 3:
                loop.call_soon_threadsafe(done.set)

        await ps.subscribe("plain", plain)
        for kind in ("a", "b", "c"):
            await ps.publish("plain", msg(kind))
        await asyncio.wait_for(done.wait(), TIMEOUT)
        assert [kind for kind, _ in seen] == ["a", "b", "c"]
        assert all(thread != loop_thread for _, thread in seen)

    # -- unsubscribe, patterns, namespace ------------------------------------------------

    async def test_unsubscribe_one_handler_then_all(self, make_pubsub: PubSubFactory) -> None:
        sub, pub = await make_pubsub(), await make_pubsub()
        keep, leave = Collector(), Collector()
        await sub.subscribe("u", keep)
        await sub.subscribe("u", leave)
        await sub.unsubscribe("u", leave)
        assert await pub.publish("u", msg("after-one")) == 1
        await keep.wait_for(1)
        assert sub.subscribed_channels() == ["u"]
        await sub.unsubscribe("u")
        assert sub.subscribed_channels() == []
        assert await pub.publish("u", msg("after-all")) == 0
        # A fresh subscription proves the earlier messages were not merely late.
        marker = Collector()
        await sub.subscribe("u", marker)
        await pub.publish("u", msg("marker"))
        await marker.wait_for(1)
        assert keep.types == ["after-one"]
        assert leave.types == []

    async def test_pattern_subscription(self, make_pubsub: PubSubFactory) -> None:
        sub, pub = await make_pubsub(), await make_pubsub()
        got, exact = Collector(), Collector()
        await sub.psubscribe("meeting.*", got)
        await sub.subscribe("other", exact)
        assert await pub.publish("meeting.started", msg("s")) == 1
        assert await pub.publish("other", msg("o")) == 1
        assert await pub.publish("meeting.ended", msg("e")) == 1
        await got.wait_for(2)
        await exact.wait_for(1)
        assert [(m.type, m.channel) for m in got.messages] == [
            ("s", "meeting.started"),
            ("e", "meeting.ended"),
        ]
        assert sub.subscribed_patterns() == ["meeting.*"]
        await sub.punsubscribe("meeting.*")
        assert await pub.publish("meeting.x", msg()) == 0
        assert (await sub.stats())["pattern_count"] == 0

    async def test_namespace_prefixes_the_wire_channel(
        self, make_pubsub: PubSubFactory, pubsub_backend: Backend, meetq_namespace: str
    ) -> None:
        ours, other = await make_pubsub(), await make_pubsub(namespace=f"{meetq_namespace}x")
        got, other_got = Collector(), Collector()
        await ours.subscribe("shared", got)
        await other.subscribe("shared", other_got)
        # A raw transport sees the prefixed wire name.
        raw = pubsub_backend.pubsub_transport()
        try:
            received: list[str] = []

            async def read_one() -> None:
                async for item in raw.messages():
                    received.append(item.channel)
                    return

            reader = asyncio.create_task(read_one())
            await raw.subscribe([f"{meetq_namespace}:shared"])
            assert await ours.publish("shared", msg("x")) == 2
            await asyncio.wait_for(reader, TIMEOUT)
        finally:
            await raw.aclose()
        assert received == [f"{meetq_namespace}:shared"]
        assert [m.channel for m in await got.wait_for(1)] == ["shared"]
        assert await other.publish("shared", msg("y")) == 1
        await other_got.wait_for(1)
        assert other_got.types == ["y"] and got.types == ["x"]

    # -- validation and failures ---------------------------------------------------------

    @pytest.mark.parametrize("channel", ["", None, 42, b"bytes"])
    async def test_bad_channel_rejected(self, make_pubsub: PubSubFactory, channel: Any) -> None:
        ps = await make_pubsub()
        with pytest.raises(ValidationError) as info:
            await ps.publish(channel, msg())
        assert info.value.field == "channel"
        with pytest.raises(ValidationError):
            await ps.subscribe(channel, Collector())
        assert (await ps.stats())["total_published"] == 0

    async def test_bad_messages_rejected_and_nothing_sent(
        self, make_pubsub: PubSubFactory
    ) -> None:
        sub, pub = await make_pubsub(), await make_pubsub()
        got = Collector()
        await sub.subscribe("v", got)
        with pytest.raises(ValidationError) as info:
            await pub.publish("v", {"type": "not-a-message"})  # type: ignore[arg-type]
        assert info.value.field == "message"
        with pytest.raises(SerializationError) as ser:
            await pub.publish("v", PubSubMessage(type="t", payload={"when": object()}))
        assert "payload.when" in ser.value.field
        # One bad message in a batch: none of the batch is sent.
        with pytest.raises(SerializationError) as batch:
            await pub.publish_batch(
                "v", [msg("ok"), PubSubMessage(type="t", payload={"n": float("nan")})]
            )
        assert batch.value.field.startswith("message")
        with pytest.raises(ValidationError):
            await pub.publish_batch("v", [msg("ok"), "nope"])  # type: ignore[list-item]
        await pub.publish("v", msg("marker"))
        await got.wait_for(1)
        assert got.types == ["marker"]
        assert (await pub.stats())["total_published"] == 1

    # -- bad input: always a meetq error (docs/reliability.md) ---------------------------

    async def test_a_name_with_a_lone_surrogate_is_rejected_everywhere(
        self, make_pubsub: PubSubFactory
    ) -> None:
        # Redis cannot carry it; memory used to take it and never deliver anything.
        ps = await make_pubsub()
        bad = "room\ud800"
        for call, field in (
            (ps.publish(bad, msg()), "channel"),
            (ps.publish_batch(bad, [msg()]), "channel"),
            (ps.subscribe(bad, Collector()), "channel"),
            (ps.psubscribe(bad + "*", Collector()), "pattern"),
            (ps.unsubscribe(bad), "channel"),
        ):
            with pytest.raises(ValidationError) as info:
                await call
            assert info.value.field == field and "surrogate" in str(info.value)
        with pytest.raises(ValidationError) as typed:
            PubSubMessage(type="t\ud800")
        assert typed.value.field == "type"
        assert ps.subscribed_channels() == [] and ps.subscribed_patterns() == []
        assert (await ps.stats())["total_published"] == 0

    async def test_malformed_glob_classes_match_as_redis_reads_them(
        self, make_pubsub: PubSubFactory
    ) -> None:
        # Redis refuses no pattern: a reversed range is the range swapped, "[]" matches
        # nothing, "[^]" any one byte, an unclosed "[" runs to the end. Every backend
        # reads them the same way, and no pattern breaks publishing on other channels.
        sub, pub = await make_pubsub(), await make_pubsub()
        got = Collector()
        for pattern in ("[b-a]", "u[]", "v[^]", "w[ab", "x[a-]"):
            await sub.psubscribe(pattern, got)
        expected = {
            "a": 1,
            "b": 1,
            "c": 0,
            "u": 0,
            "u]": 0,
            "vx": 1,
            "v": 0,
            "wa": 1,
            "wb": 1,
            "w[": 0,
            "x]": 1,  # "[a-]" is the range "]".."a" (0x5d..0x61), as Redis reads it
            "x^": 1,
            "xb": 0,
        }
        counts = {channel: await pub.publish(channel, msg(channel)) for channel in expected}
        assert counts == expected
        matched = [channel for channel, n in expected.items() if n]
        await got.wait_for(len(matched))
        assert sorted(got.types) == sorted(matched)

    async def test_a_bad_grace_is_a_validation_error(self, make_pubsub: PubSubFactory) -> None:
        ps = await make_pubsub()
        for grace in (10**400, float("nan"), float("inf"), -1, "soon"):
            with pytest.raises(ValidationError) as info:
                await ps.stop(grace)  # type: ignore[arg-type]
            assert info.value.field == "grace"
        await ps.stop(0)

    async def test_handler_exception_contained_and_counted(
        self, make_pubsub: PubSubFactory
    ) -> None:
        ps = await make_pubsub()
        got = Collector()

        async def broken(message: PubSubMessage) -> None:
            if message.type == "boom":
                raise RuntimeError("handler bug")
            await got(message)

        await ps.subscribe("f", broken)
        await ps.publish("f", msg("boom"))
        await ps.publish("f", msg("fine"))
        await got.wait_for(1)
        stats = await ps.stats()
        assert stats["total_failed"] == 1
        assert stats["total_processed"] == 1
        assert got.types == ["fine"]

    async def test_plain_handler_stop_iteration_and_exit_are_counted_failures(
        self, make_pubsub: PubSubFactory
    ) -> None:
        # StopIteration from a thread once hung the consumer forever; SystemExit ended it.
        ps = await make_pubsub()
        got = Collector()
        loop = asyncio.get_running_loop()

        def plain(message: PubSubMessage) -> None:
            if message.type == "stop":
                raise StopIteration
            if message.type == "exit":
                raise SystemExit(0)
            asyncio.run_coroutine_threadsafe(got(message), loop).result(10)

        async def exits(message: PubSubMessage) -> None:
            if message.type == "exit":
                raise SystemExit(0)

        await ps.subscribe("f", plain)
        await ps.subscribe("f", exits)
        for kind in ("stop", "exit", "fine"):
            await ps.publish("f", msg(kind))
        await got.wait_for(1)
        assert got.types == ["fine"]
        await eventually(lambda: _handled(ps, 6))  # 3 messages x 2 handlers
        assert (await ps.stats())["total_failed"] == 3

    async def test_undecodable_message_counted_reader_survives(
        self, make_pubsub: PubSubFactory, pubsub_backend: Backend, meetq_namespace: str
    ) -> None:
        ps = await make_pubsub()
        got = Collector()
        await ps.subscribe("d", got)
        raw = pubsub_backend.pubsub_transport()
        try:
            await raw.publish(f"{meetq_namespace}:d", b"\xff not json")
            await raw.publish(f"{meetq_namespace}:d", b'{"id": "x"}')  # JSON, wrong shape
        finally:
            await raw.aclose()
        await ps.publish("d", msg("after"))
        await got.wait_for(1)
        stats = await ps.stats()
        assert stats["decode_errors"] == 2
        assert got.types == ["after"]

    # -- isolation and overflow ----------------------------------------------------------

    async def test_slow_handler_delays_no_other_handler_or_channel(
        self, make_pubsub: PubSubFactory
    ) -> None:
        sub, pub = await make_pubsub(), await make_pubsub()
        gate, same_channel, other_channel = Gate(), Collector(), Collector()
        await sub.subscribe("busy", gate)
        await sub.subscribe("busy", same_channel)
        await sub.subscribe("quiet", other_channel)
        for i in range(20):
            await pub.publish("busy", msg(f"b{i}"))
            await pub.publish("quiet", msg(f"q{i}"))
        # Both complete while the gate handler is still stuck on its first message.
        await same_channel.wait_for(20)
        await other_channel.wait_for(20)
        assert gate.entered.is_set() and not gate.released.is_set()
        assert len(gate.messages) == 1
        gate.release()
        await wait_until(lambda: len(gate.messages) == 20)
        assert [m.type for m in gate.messages] == [f"b{i}" for i in range(20)]

    @pytest.mark.parametrize(
        ("policy", "expected"),
        [
            ("drop_oldest", ["m0", "m3", "m4"]),
            ("drop_newest", ["m0", "m1", "m2"]),
            ("block", ["m0", "m1", "m2", "m3", "m4"]),
        ],
    )
    async def test_subscriber_overflow_policy(
        self, make_pubsub: PubSubFactory, policy: str, expected: list[str]
    ) -> None:
        sub = await make_pubsub(subscriber_buffer=2, subscriber_overflow=policy)
        pub = await make_pubsub()
        gate, witness = Gate(), Collector()
        await sub.subscribe("o", gate)
        await sub.subscribe("w", witness)
        await pub.publish("o", msg("m0"))
        await asyncio.wait_for(gate.entered.wait(), TIMEOUT)
        for i in range(1, 5):
            await pub.publish("o", msg(f"m{i}"))
        if policy == "block":
            # The reader holds m3 waiting for room, so it reads nothing after it.
            await wait_until(lambda: sub._received == 4)
            await pub.publish("w", msg("w"))
            assert (await sub.stats())["total_received"] == 4
            assert witness.messages == []
        else:
            # A witness published afterwards on another channel arrives: every "o"
            # message before it has been routed (one reader, arrival order).
            await pub.publish("w", msg("w"))
            await witness.wait_for(1)
            assert (await sub.stats())["dropped"] == 2
        gate.release()
        await wait_until(lambda: len(gate.messages) == len(expected))
        await witness.wait_for(1)
        assert [m.type for m in gate.messages] == expected
        stats = await sub.stats()
        assert stats["dropped"] == 5 - len(expected)
        assert stats["total_processed"] == len(expected) + 1

    # -- lifecycle and stats -------------------------------------------------------------

    async def test_subscribe_before_start_confirmed_by_start(
        self, make_pubsub: PubSubFactory
    ) -> None:
        sub, pub = await make_pubsub(start=False), await make_pubsub()
        got, pattern_got = Collector(), Collector()
        await sub.subscribe("early", got)
        await sub.psubscribe("early.*", pattern_got)
        assert sub.subscribed_channels() == ["early"]
        await sub.start()
        assert await pub.publish("early", msg("a")) == 1
        assert await pub.publish("early.x", msg("b")) == 1
        await got.wait_for(1)
        await pattern_got.wait_for(1)

    async def test_stats_keys_and_counts(self, make_pubsub: PubSubFactory) -> None:
        ps = await make_pubsub()
        got = Collector()
        await ps.subscribe("s1", got)
        await ps.subscribe("s2", got)
        await ps.publish("s1", msg())
        await ps.publish("s2", msg())
        await got.wait_for(2)
        stats = await ps.stats()
        for key in (
            "total_published",
            "total_received",
            "total_processed",
            "total_failed",
            "channel_count",
            "dropped",
            "reconnects",
        ):
            assert key in stats
        assert stats["total_published"] == 2
        assert stats["total_received"] == 2
        assert stats["total_processed"] == 2
        assert stats["total_failed"] == 0
        assert stats["channel_count"] == 2
        assert stats["dropped"] == 0
        assert stats["reconnects"] == 0
        assert ps.subscribed_channels() == ["s1", "s2"]

    async def test_stop_is_idempotent_and_closes(
        self, pubsub_backend: Backend, meetq_config: MeetqConfig
    ) -> None:
        got = Collector()
        async with PubSub(pubsub_backend, meetq_config.event_bus) as ps:
            await ps.subscribe("x", got)
            await ps.publish("x", msg())
            await got.wait_for(1)
        await ps.stop()
        with pytest.raises(ClosedError):
            await ps.publish("x", msg())
        with pytest.raises(ClosedError):
            await ps.subscribe("x", got)
        with pytest.raises(ClosedError):
            await ps.start()

    async def test_stop_handles_buffered_messages_within_grace(
        self, make_pubsub: PubSubFactory
    ) -> None:
        sub, pub = await make_pubsub(), await make_pubsub()
        gate = Gate()
        await sub.subscribe("g", gate)
        for i in range(3):
            await pub.publish("g", msg(f"m{i}"))
        await asyncio.wait_for(gate.entered.wait(), TIMEOUT)
        await wait_until(lambda: sub._received == 3)  # all three are buffered
        stopping = asyncio.create_task(sub.stop())
        gate.release()
        await asyncio.wait_for(stopping, TIMEOUT)
        assert [m.type for m in gate.messages] == ["m0", "m1", "m2"]

    async def test_config_mapping_and_overrides_validated(
        self, pubsub_backend: Backend
    ) -> None:
        ps = PubSub(pubsub_backend, {"namespace": "n1", "subscriber_buffer": 7}, source="s")
        try:
            assert ps.config.namespace == "n1" and ps.config.subscriber_buffer == 7
        finally:
            await ps.stop()
        from meetq.core.errors import ConfigError

        with pytest.raises(ConfigError) as info:
            PubSub(pubsub_backend, subscriber_overflow="sometimes")
        assert info.value.key == "event_bus.subscriber_overflow"

    async def test_stop_cancels_a_stuck_handler_after_grace(
        self, make_pubsub: PubSubFactory
    ) -> None:
        sub, pub = await make_pubsub(), await make_pubsub()
        cancelled = asyncio.Event()

        async def stuck(message: PubSubMessage) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        await sub.subscribe("stuck", stuck)
        for i in range(3):
            await pub.publish("stuck", msg(f"m{i}"))
        await wait_until(lambda: sub._received == 3)
        # The consumer's own cancellation is not mistaken for a handler failure.
        await asyncio.wait_for(sub.stop(grace=0), TIMEOUT)
        assert cancelled.is_set()
        stats = await sub.stats()
        assert stats["dropped"] == 2 and stats["total_failed"] == 0

    async def test_unsubscribed_handler_draining_is_covered_by_stop(
        self, make_pubsub: PubSubFactory
    ) -> None:
        sub, pub = await make_pubsub(), await make_pubsub()
        gate = Gate()
        cancelled = asyncio.Event()

        async def handler(message: PubSubMessage) -> None:
            try:
                await gate(message)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        await sub.subscribe("r", handler)
        for i in range(5):
            await pub.publish("r", msg(f"m{i}"))
        await wait_until(lambda: sub._received == 5)
        await asyncio.wait_for(gate.entered.wait(), TIMEOUT)
        await sub.unsubscribe("r")  # four messages still buffered: the consumer drains on
        await asyncio.wait_for(sub.stop(grace=0), TIMEOUT)
        # stop() cancelled it and counted what it could not handle; nothing runs on.
        assert cancelled.is_set()
        assert (await sub.stats())["dropped"] == 4
        gate.release()
        assert len(gate.messages) == 1

    async def test_unsubscribed_handler_finishes_its_buffer_within_grace(
        self, make_pubsub: PubSubFactory
    ) -> None:
        sub, pub = await make_pubsub(), await make_pubsub()
        gate = Gate()
        await sub.subscribe("r", gate)
        for i in range(3):
            await pub.publish("r", msg(f"m{i}"))
        await wait_until(lambda: sub._received == 3)
        await asyncio.wait_for(gate.entered.wait(), TIMEOUT)
        await sub.unsubscribe("r")
        stopping = asyncio.create_task(sub.stop(grace=TIMEOUT))
        # It waits for the retired handler (a bounded wait: asserting a non-event).
        finished, _ = await asyncio.wait({stopping}, timeout=0.2)
        assert not finished
        gate.release()
        await asyncio.wait_for(stopping, TIMEOUT)
        assert [m.type for m in gate.messages] == ["m0", "m1", "m2"]
        assert (await sub.stats())["dropped"] == 0

    async def test_handler_raising_cancelled_error_is_a_failure_not_the_end(
        self, make_pubsub: PubSubFactory
    ) -> None:
        ps = await make_pubsub()
        got = Collector()

        async def awaits_a_cancelled_future(message: PubSubMessage) -> None:
            if message.type == "a":
                # e.g. awaiting a task or future that another task cancelled
                future = asyncio.get_running_loop().create_future()
                future.cancel()
                await future
            await got(message)

        await ps.subscribe("c", awaits_a_cancelled_future)
        for kind in ("a", "b", "c"):
            await ps.publish("c", msg(kind))
        await got.wait_for(2)
        assert got.types == ["b", "c"]
        stats = await ps.stats()
        assert stats["total_failed"] == 1 and stats["total_processed"] == 2

    async def test_reader_survives_an_unexpected_error(
        self,
        make_pubsub: PubSubFactory,
        pubsub_backend: Backend,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        recording = RecordingBackend(pubsub_backend)
        ps = await make_pubsub(start=False, via=recording)
        calls = 0

        def fails_once(
            messages: Callable[[], AsyncIterator[TransportMessage]],
        ) -> AsyncIterator[TransportMessage]:
            nonlocal calls
            calls += 1

            async def stream(first: bool) -> AsyncIterator[TransportMessage]:
                # The first stream breaks after one message, as a bug in routing would.
                async for item in messages():
                    yield item
                    if first:
                        raise RuntimeError("unexpected")

            return stream(calls == 1)

        recording.around("messages", fails_once)
        got = Collector()
        await ps.subscribe("s", got)
        await ps.start()
        with caplog.at_level(logging.ERROR, logger="meetq.pubsub"):
            await ps.publish("s", msg("a"))
            await got.wait_for(1)
            await ps.publish("s", msg("b"))
            await got.wait_for(2)
        assert got.types == ["a", "b"]
        assert calls == 2
        assert any("reader failed unexpectedly" in r.getMessage() for r in caplog.records)

    async def test_failed_start_can_be_retried(
        self, make_pubsub: PubSubFactory, pubsub_backend: Backend
    ) -> None:
        recording = RecordingBackend(pubsub_backend)
        sub, pub = await make_pubsub(start=False, via=recording), await make_pubsub()
        got = Collector()
        await sub.subscribe("early", got)
        recording.fail("subscribe", BackendUnavailableError("backend down", backend="test"))
        with pytest.raises(BackendUnavailableError):
            await sub.start()
        assert await pub.publish("early", msg("lost")) == 0
        assert recording.count("subscribe") == 1  # the failed call; the fault is used up
        await sub.start()
        assert sub.subscribed_channels() == ["early"]
        assert await pub.publish("early", msg("after")) == 1
        assert [m.type for m in await got.wait_for(1)] == ["after"]
        await sub.start()  # idempotent once started
        assert await pub.publish("early", msg("again")) == 1
        await got.wait_for(2)
        assert got.types == ["after", "again"]

    async def test_subscribe_unsubscribe_subscribe_race_ends_subscribed(
        self, make_pubsub: PubSubFactory
    ) -> None:
        sub, pub = await make_pubsub(), await make_pubsub()
        first, second = Collector(), Collector()
        await sub.subscribe("warmup", Collector())  # the connection exists
        for kind, name in (("channel", "room"), ("pattern", "room.*")):
            add = sub.subscribe if kind == "channel" else sub.psubscribe
            remove = sub.unsubscribe if kind == "channel" else sub.punsubscribe
            # Each call starts before the one before it is confirmed.
            t1 = asyncio.create_task(add(name, first))
            await asyncio.sleep(0)
            t2 = asyncio.create_task(remove(name))
            await asyncio.sleep(0)
            t3 = asyncio.create_task(add(name, second))
            await asyncio.wait_for(asyncio.gather(t1, t2, t3), TIMEOUT)
        assert sub.subscribed_channels() == ["room", "warmup"]
        assert sub.subscribed_patterns() == ["room.*"]
        assert await pub.publish("room", msg("exact")) == 1
        assert await pub.publish("room.x", msg("pattern")) == 1
        await second.wait_for(2)
        assert sorted(second.types) == ["exact", "pattern"]
        assert first.messages == []

    async def test_block_overflow_handler_may_subscribe(self, make_pubsub: PubSubFactory) -> None:
        sub = await make_pubsub(subscriber_buffer=1, subscriber_overflow="block")
        pub = await make_pubsub()
        full = asyncio.Event()
        joined = Collector()
        outcome: list[str] = []

        async def control(message: PubSubMessage) -> None:
            if message.type == "join":
                await full.wait()  # the buffer is full and the reader blocked on it
                await asyncio.wait_for(sub.subscribe("room", joined), TIMEOUT)
                await asyncio.wait_for(sub.unsubscribe("room", joined), TIMEOUT)
                await asyncio.wait_for(sub.subscribe("room", joined), TIMEOUT)
            outcome.append(message.type)

        await sub.subscribe("control", control)
        await pub.publish("control", msg("join"))
        await pub.publish("control", msg("m1"))
        await pub.publish("control", msg("m2"))
        await wait_until(lambda: sub._received == 3)
        full.set()
        await wait_until(lambda: outcome == ["join", "m1", "m2"])
        assert (await sub.stats())["dropped"] == 0
        assert await pub.publish("room", msg("hello")) == 1
        assert [m.type for m in await joined.wait_for(1)] == ["hello"]

    async def test_glob_characters_in_the_namespace_match_literally(
        self, make_pubsub: PubSubFactory, meetq_namespace: str
    ) -> None:
        ours = await make_pubsub(namespace=f"{meetq_namespace}[1]*")
        lookalike = await make_pubsub(namespace=f"{meetq_namespace}1x")
        got = Collector()
        await ours.psubscribe("meeting.*", got)
        assert await lookalike.publish("meeting.y", msg("other")) == 0
        assert await ours.publish("meeting.x", msg("own")) == 1
        assert [(m.type, m.channel) for m in await got.wait_for(1)] == [("own", "meeting.x")]

    async def test_on_reconnect_accepts_callbacks(self, make_pubsub: PubSubFactory) -> None:
        ps = await make_pubsub()
        calls: list[str] = []

        async def refresh() -> None:
            calls.append("refresh")

        ps.on_reconnect(refresh)
        with pytest.raises(ValidationError):
            ps.on_reconnect("not callable")  # type: ignore[arg-type]
        # Nothing dropped, so nothing fired; the reconnect itself is tested against a
        # real server in tests/integration.
        assert calls == [] and (await ps.stats())["reconnects"] == 0


async def _handled(ps: PubSub, count: int) -> bool:
    stats = await ps.stats()
    return stats["total_processed"] + stats["total_failed"] == count
