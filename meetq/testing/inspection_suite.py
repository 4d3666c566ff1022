"""Contract tests for the inspection and dead-letter maintenance API of ``MessageQueue``.

``inspect()`` (waiting by priority, delayed, running, dead, totals, the live workers of
each type), ``dead_letter(id)``, ``requeue_dead_letters`` with a type filter, and the
purges with a limit: what ``meetq stats``, ``meetq dlq`` and a dashboard read, the same
on every backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from meetq import MessageQueue, traceback_summary
from meetq.core.errors import ValidationError
from meetq.core.protocols import Backend
from meetq.core.types import Message, Priority
from meetq.testing._base import BackendContract
from meetq.testing._helpers import QUICK, eventually

__all__ = ["InspectionContract"]

MakeQueue = Callable[..., MessageQueue]


class InspectionContract(BackendContract):
    """The inspection part of the contract suite."""

    @pytest_asyncio.fixture
    async def inspected_queue(
        self, backend: Backend, contract_queue_name: str
    ) -> AsyncIterator[Callable[..., MessageQueue]]:
        made: list[MessageQueue] = []

        def make(**overrides: Any) -> MessageQueue:
            mq = MessageQueue(backend, **{**QUICK, "queue_name": contract_queue_name, **overrides})
            made.append(mq)
            return mq

        yield make
        for mq in made:
            await mq.stop(grace=0)

    async def _dead_letter(self, mq: MessageQueue, types: list[str]) -> list[str]:
        """Publish one message per entry of ``types`` and let a failing handler
        dead-letter each (``mq`` handles every type named); return the ids in order."""
        ids = []
        for t in types:
            ids.append(await mq.publish(Message(type=t, max_retries=0)))
        async with mq:
            await eventually(lambda: _dead_count(mq, len(types)))
        return ids

    def _failing(self, mq: MessageQueue, *types: str) -> None:
        for t in types:

            @mq.handler(t)
            async def fail(msg: Message) -> None:
                raise ValueError(f"bad input {msg.id}")

    async def test_inspect_counts_waiting_by_priority_delayed_and_totals(
        self, inspected_queue: MakeQueue
    ) -> None:
        mq = inspected_queue()
        await mq.publish(Message(type="job", priority=Priority.HIGH))
        await mq.publish(Message(type="job", priority=Priority.HIGH))
        await mq.publish(Message(type="job", priority=Priority.LOW))
        await mq.publish(Message(type="other", priority=Priority.NORMAL), delay=600)
        info = await mq.inspect()
        assert info.queue == mq.config.queue_name
        assert info.waiting == {"critical": 0, "high": 2, "normal": 1, "low": 1}
        assert info.waiting_total == 4
        assert info.delayed == 1
        assert (info.running, info.dead) == (0, 0)
        assert info.totals["published"] == 4
        assert set(info.totals) == {
            "published",
            "processed",
            "failed",
            "retried",
            "dead_letter",
            "dropped",
        }
        assert info.handlers == {}  # nobody consumes yet
        # The same figures stats() shows, and the JSON form carries them all.
        stats = await mq.stats()
        assert stats["queue_length"] == {**info.waiting, "total": 4}
        assert info.to_dict()["waiting_total"] == 4
        assert info.to_dict()["totals"] == info.totals

    async def test_inspect_shows_running_and_the_live_workers_of_each_type(
        self, inspected_queue: MakeQueue
    ) -> None:
        one = inspected_queue(worker_name="w1", unhandled_timeout="200ms")
        two = inspected_queue(worker_name="w2", unhandled_timeout="200ms")
        started, release = asyncio.Event(), asyncio.Event()

        @one.handler("a")
        async def slow(msg: Message) -> None:
            started.set()
            await release.wait()

        @two.handler("a")
        async def a_too(msg: Message) -> None:
            started.set()
            await release.wait()

        @two.handler("b")
        async def b(msg: Message) -> None:
            pass

        async with one:
            async with two:
                info = await one.inspect()
                assert info.handlers == {"a": ["w1", "w2"], "b": ["w2"]}
                await one.publish(Message(type="a"))
                await asyncio.wait_for(started.wait(), 10)
                assert (await one.inspect()).running == 1
                release.set()
            # w2 stopped beating: once its heartbeat lapses it is no longer listed.
            await eventually(lambda: _handlers(one, {"a": ["w1"]}))

    async def test_dead_letter_by_id_carries_error_and_traceback_summary(
        self, inspected_queue: MakeQueue
    ) -> None:
        mq = inspected_queue()
        self._failing(mq, "job")
        (dead_id,) = await self._dead_letter(mq, ["job"])
        letter = await mq.dead_letter(dead_id)
        assert letter is not None and letter.id == dead_id
        assert letter.error == f"ValueError: bad input {dead_id}"
        summary = traceback_summary(letter.traceback)
        assert summary.startswith('File "') and summary.endswith(letter.error)
        assert await mq.dead_letter("no-such-id") is None
        with pytest.raises(ValidationError) as bad:
            await mq.dead_letter(7)  # type: ignore[arg-type]
        assert bad.value.field == "message_id"

    async def test_requeue_with_max_and_type_filter(self, inspected_queue: MakeQueue) -> None:
        mq = inspected_queue()
        self._failing(mq, "a", "b")
        ids = await self._dead_letter(mq, ["a", "b", "a", "b", "a"])
        # Oldest first, of the type asked for only.
        assert await mq.requeue_dead_letters(1, message_type="b") == 1
        assert [d.id for d in await mq.dead_letters()] == [ids[0], ids[2], ids[3], ids[4]]
        assert await mq.requeue_dead_letters(10, message_type="a") == 3
        assert [d.id for d in await mq.dead_letters()] == [ids[3]]
        assert await mq.requeue_dead_letters(10, message_type="c") == 0
        info = await mq.inspect()
        assert (info.waiting_total, info.dead) == (4, 1)
        with pytest.raises(ValidationError) as bad:
            await mq.requeue_dead_letters(1, message_type="")
        assert bad.value.field == "message_type"

    async def test_inspect_tells_how_long_the_oldest_ready_message_has_waited(
        self, inspected_queue: MakeQueue
    ) -> None:
        mq = inspected_queue()
        assert (await mq.inspect()).oldest_age == 0.0
        await mq.publish(Message(type="later"), delay=600)  # not ready: not counted
        assert (await mq.inspect()).oldest_age == 0.0
        await mq.publish(Message(type="job", priority=Priority.LOW))
        await eventually(lambda: _oldest_over(mq, 0.2))  # it ages while it waits
        # Newer messages of a higher priority, or of another type, do not hide it.
        await mq.publish(Message(type="job", priority=Priority.CRITICAL))
        await mq.publish(Message(type="other"))
        info = await mq.inspect()
        assert info.oldest_age is not None and info.oldest_age >= 0.2
        assert info.to_dict()["oldest_age"] == info.oldest_age
        # A delayed message counts once due, before any worker has made it ready.
        due = inspected_queue(queue_name="due")
        await due.publish(Message(type="soon"), delay=0.05)
        await eventually(lambda: _oldest_over(due, 0.1))
        # Consumed: nothing ready again (the delayed one is not).
        for t in ("job", "other"):

            @mq.handler(t)
            async def take(msg: Message) -> None:
                pass

        async with mq:
            await eventually(lambda: _processed(mq, 3))
            assert (await mq.inspect()).oldest_age == 0.0

    async def test_purges_take_a_limit(self, inspected_queue: MakeQueue) -> None:
        mq = inspected_queue()
        self._failing(mq, "job")
        ids = await self._dead_letter(mq, ["job"] * 3)
        assert await mq.clear_dead_letters(0) == 0
        assert await mq.clear_dead_letters(2) == 2  # the oldest two
        assert [d.id for d in await mq.dead_letters()] == [ids[2]]
        assert await mq.clear_dead_letters() == 1
        for _ in range(4):
            await mq.publish(Message(type="idle"))
        await mq.publish(Message(type="idle"), delay=600)
        assert await mq.clear(0) == 0
        assert await mq.clear(3) == 3
        assert await mq.queue_length() == 2
        assert await mq.clear() == 2
        info = await mq.inspect()
        assert (info.waiting_total, info.delayed, info.dead) == (0, 0, 0)
        with pytest.raises(ValidationError) as bad:
            await mq.clear(-1)
        assert bad.value.field == "max_count"


async def _dead_count(mq: MessageQueue, count: int) -> bool:
    return await mq.dead_letter_count() == count


async def _oldest_over(mq: MessageQueue, seconds: float) -> bool:
    return ((await mq.inspect()).oldest_age or 0.0) > seconds


async def _processed(mq: MessageQueue, count: int) -> bool:
    return (await mq.inspect()).totals["processed"] == count


async def _handlers(mq: MessageQueue, expected: dict[str, list[str]]) -> bool:
    return (await mq.inspect()).handlers == expected
