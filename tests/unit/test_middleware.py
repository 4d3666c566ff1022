"""MessageQueue middleware (meetq.core.middleware) on the memory backend: what each hook
sees, in which order, with which outcome; a failing hook changes nothing."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import attrs
import pytest

from meetq import Delivery, Message, MessageQueue, ValidationError
from meetq.backends.memory._backend import MemoryBackend
from meetq.testing import eventually


class Recorder:
    def __init__(self, name: str = "r", log: list[tuple[Any, ...]] | None = None) -> None:
        self.name = name
        self.log: list[tuple[Any, ...]] = [] if log is None else log

    def before_publish(self, queue: str, message: Message) -> None:
        self.log.append((self.name, "before_publish", queue, message.type))

    def after_publish(
        self, queue: str, message: Message, message_id: str | None, error: BaseException | None
    ) -> None:
        self.log.append((self.name, "after_publish", queue, message_id, type(error).__name__))

    def before_process(self, delivery: Delivery) -> None:
        delivery.scratch[self] = delivery.attempt
        self.log.append((self.name, "before_process", delivery.queue, delivery.message.id))

    def after_process(
        self, delivery: Delivery, outcome: str, duration: float, error: str | None
    ) -> None:
        assert duration >= 0
        assert delivery.scratch[self] == delivery.attempt
        self.log.append(
            (self.name, "after_process", delivery.message.id, delivery.attempt, outcome, error)
        )


def _queue(**overrides: Any) -> MessageQueue:
    settings: dict[str, Any] = {
        "queue_name": "mw",
        "workers": 2,
        "poll_interval": 0.05,
        "retry_backoff_base": 0.01,
        "retry_backoff_max": 0.01,
        "retry_jitter": 0,
        **overrides,
    }
    return MessageQueue(MemoryBackend(), worker_name="w1", **settings)


async def test_hooks_see_publish_and_every_outcome() -> None:
    mq = _queue(max_retries=1)
    rec = Recorder()
    mq.add_middleware(rec)
    done = asyncio.Event()

    @mq.handler("ok")
    async def ok(message: Message) -> None:
        pass

    @mq.handler("bad")
    async def bad(message: Message) -> None:
        if message.attempt == 2:
            done.set()
        raise RuntimeError("boom")

    good = Message(type="ok")
    failing = Message(type="bad")
    assert await mq.publish(good) == good.id
    assert await mq.publish_batch([failing]) == [failing.id]
    async with mq:
        await asyncio.wait_for(done.wait(), 10)
        await eventually(lambda: sum(1 for e in rec.log if e[1] == "after_process") == 3)
    assert rec.log[:4] == [
        ("r", "before_publish", "mw", "ok"),
        ("r", "after_publish", "mw", good.id, "NoneType"),
        ("r", "before_publish", "mw", "bad"),
        ("r", "after_publish", "mw", failing.id, "NoneType"),
    ]
    settled = sorted(e[2:] for e in rec.log if e[1] == "after_process")
    assert settled == sorted(
        [
            (good.id, 1, "ack", None),
            (failing.id, 1, "retry", "RuntimeError: boom"),
            (failing.id, 2, "dead", "RuntimeError: boom"),
        ]
    )


async def test_dropped_when_the_dead_letter_queue_is_off() -> None:
    mq = _queue(max_retries=0, enable_dead_letter_queue=False)
    rec = Recorder()
    mq.add_middleware(rec)

    @mq.handler("bad")
    async def bad(message: Message) -> None:
        raise ValueError("no")

    msg = Message(type="bad")
    await mq.publish(msg)
    async with mq:
        await eventually(lambda: any(e[1] == "after_process" for e in rec.log))
    assert [e[2:] for e in rec.log if e[1] == "after_process"] == [
        (msg.id, 1, "dropped", "ValueError: no")
    ]


async def test_release_on_stop_is_reported_uncharged() -> None:
    mq = _queue(shutdown_grace=0.05)
    rec = Recorder()
    mq.add_middleware(rec)
    started = asyncio.Event()

    @mq.handler("slow")
    async def slow(message: Message) -> None:
        started.set()
        await asyncio.Event().wait()

    msg = Message(type="slow")
    await mq.publish(msg)
    await mq.start()
    await asyncio.wait_for(started.wait(), 10)
    await mq.stop()
    assert [e[2:] for e in rec.log if e[1] == "after_process"] == [(msg.id, 1, "release", None)]


async def test_before_publish_may_replace_the_message_and_hooks_run_in_order() -> None:
    mq = _queue()
    order: list[tuple[Any, ...]] = []

    class Stamp:
        def before_publish(self, queue: str, message: Message) -> Message:
            order.append(("stamp", "before_publish"))
            return attrs.evolve(message, headers={**message.headers, "stamped": "yes"})

    mq.add_middleware(Stamp())
    mq.add_middleware(Recorder("second", order))
    seen: list[Message] = []

    @mq.handler("t")
    async def handle(message: Message) -> None:
        seen.append(message)

    await mq.publish(Message(type="t", headers={"a": "1"}))
    async with mq:
        await eventually(lambda: bool(seen))
    assert seen[0].headers == {"a": "1", "stamped": "yes"}
    assert order[:2] == [("stamp", "before_publish"), ("second", "before_publish", "mw", "t")]


async def test_failed_publish_is_reported_with_its_error() -> None:
    mq = _queue()
    rec = Recorder()
    mq.add_middleware(rec)
    with pytest.raises(ValidationError, match=r"messages\[1\]"):
        await mq.publish_batch([Message(type="t"), "not a message"])  # type: ignore[list-item]
    assert [e[1:] for e in rec.log] == [
        ("before_publish", "mw", "t"),
        ("after_publish", "mw", None, "ValidationError"),
    ]
    assert await mq.queue_length() == 0


async def test_a_raising_hook_is_logged_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mq = _queue()

    class Broken:
        def before_publish(self, queue: str, message: Message) -> None:
            raise RuntimeError("broken before_publish")

        def before_process(self, delivery: Delivery) -> None:
            raise RuntimeError("broken before_process")

        def after_process(self, *args: object) -> None:
            raise RuntimeError("broken after_process")

    mq.add_middleware(Broken())
    rec = Recorder()
    mq.add_middleware(rec)
    handled: list[str] = []

    @mq.handler("t")
    async def handle(message: Message) -> None:
        handled.append(message.id)

    with caplog.at_level(logging.ERROR, logger="meetq.middleware"):
        msg_id = await mq.publish(Message(type="t"))
        async with mq:
            await eventually(lambda: any(e[1] == "after_process" for e in rec.log))
            stats = await mq.stats()
    assert handled == [msg_id]
    assert stats["total_processed"] == 1 and stats["total_failed"] == 0
    assert [e[4] for e in rec.log if e[1] == "after_process"] == ["ack"]
    assert "broken before_publish" in caplog.text


def test_add_middleware_rejects_an_object_without_hooks_and_a_second_add() -> None:
    mq = _queue()
    with pytest.raises(ValidationError, match="at least one of the methods"):
        mq.add_middleware(object())
    rec = Recorder()
    mq.add_middleware(rec)
    with pytest.raises(ValidationError, match="already added"):
        mq.add_middleware(rec)


async def test_no_middleware_means_no_delivery_bookkeeping() -> None:
    mq = _queue()
    seen: list[str] = []

    @mq.handler("t")
    async def handle(message: Message) -> None:
        seen.append(message.id)
        assert mq._deliveries == {}

    await mq.publish(Message(type="t"))
    async with mq:
        await eventually(lambda: bool(seen))
    assert mq._deliveries == {}


async def test_pubsub_hooks_see_publish_and_each_handler_call() -> None:
    from meetq import PubSub, PubSubMessage
    from meetq.core.middleware import Broadcast

    log: list[tuple[Any, ...]] = []

    class Tagging:
        def before_publish(self, channel: str, message: PubSubMessage) -> PubSubMessage:
            log.append(("before_publish", channel, message.type))
            return attrs.evolve(message, headers={"tag": "x"})

        def after_publish(
            self, channel: str, message: PubSubMessage, message_id: str | None, error: Any
        ) -> None:
            log.append(("after_publish", channel, message_id == message.id, error))

        def before_process(self, seen: Broadcast) -> None:
            log.append(("before_process", seen.channel, seen.subscription, seen.message.type))

        def after_process(self, seen: Broadcast, outcome: str, duration: float, error: Any) -> None:
            assert duration >= 0 and seen.source == pubsub.source
            log.append(("after_process", seen.message.type, outcome, error))

    pubsub = PubSub(MemoryBackend(), namespace="mw")
    pubsub.add_middleware(Tagging())
    got: list[PubSubMessage] = []

    async def handle(message: PubSubMessage) -> None:
        got.append(message)
        if message.type == "bad":
            raise ValueError("no")

    async with pubsub:
        await pubsub.psubscribe("ev.*", handle)
        await pubsub.publish("ev.a", PubSubMessage(type="good"))
        await pubsub.publish_batch("ev.b", [PubSubMessage(type="bad")])
        await eventually(lambda: sum(e[0] == "after_process" for e in log) == 2)
    assert [m.headers.get("tag") for m in got] == ["x", "x"]  # the replacement was sent
    assert ("before_publish", "ev.a", "good") in log
    assert ("after_publish", "ev.a", True, None) in log
    assert ("before_process", "ev.a", "ev.*", "good") in log
    assert ("after_process", "good", "ack", None) in log
    assert ("after_process", "bad", "dropped", "ValueError: no") in log
    assert (await pubsub.stats())["total_failed"] == 1
