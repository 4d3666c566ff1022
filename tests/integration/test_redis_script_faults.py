"""Corrupt keys on a real redis-server: a script never fails halfway, one bad type or
message never stops the rest, and the counters stay true.

Redis keeps every write a Lua script made before it raised, so each test corrupts a key
by hand the way an operator (or a stray ``SET``) might, then checks three things: what
was published is not lost or half-stored, the other types keep flowing, and once the key
is repaired nothing has been charged an attempt it never ran.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from meetq import Message, MessageQueue, initialize_queue_system
from meetq.core.errors import BackendUnavailableError
from meetq.testing.work_queue_suite import eventually

QUEUE = "faults"


class Setup:
    def __init__(self, qm: Any, mq: MessageQueue, raw: aioredis.Redis, namespace: str) -> None:
        self.qm = qm
        self.mq = mq
        self.raw = raw
        self.namespace = namespace

    def key(self, name: str) -> str:
        return f"{self.namespace}:{{{QUEUE}}}:{name}"

    async def counters_true(self, *, waiting: int, processing: int) -> bool:
        return (
            await self.mq.queue_length() == waiting
            and await self.mq.processing_count() == processing
        )


@pytest_asyncio.fixture
async def setup(meetq_redis_url: str, meetq_namespace: str) -> AsyncIterator[Setup]:
    qm = await initialize_queue_system(
        {
            "redis": {"url": meetq_redis_url, "key_prefix": meetq_namespace},
            "message_queue": {
                "type": "redis",
                "queue_name": QUEUE,
                "workers": 4,
                "max_retries": 0,
                "retry_backoff_base": "10ms",
                "poll_interval": "50ms",
                "visibility_timeout": "2s",
            },
            "event_bus": {"enabled": False},
            "task_dispatcher": {"enabled": False},
        }
    )
    mq = qm.get_message_queue()
    assert mq is not None
    raw = aioredis.Redis.from_url(meetq_redis_url)
    try:
        yield Setup(qm, mq, raw, meetq_namespace)
    finally:
        await qm.stop()
        await raw.aclose()


def _fault_records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


async def test_a_failed_publish_stores_nothing_and_the_same_id_delivers_later(
    setup: Setup,
) -> None:
    mq, raw = setup.mq, setup.raw
    seen: list[tuple[str, int]] = []

    @mq.handler("t")
    async def t(msg: Message) -> None:
        seen.append((msg.id, msg.attempt))

    ready = setup.key("ready:t")
    await raw.set(ready, "not a sorted set")
    one = Message(type="t")
    batch = [Message(type="u"), Message(type="t", dedup_key="k")]
    with pytest.raises(BackendUnavailableError, match=r"corrupt key \S+:ready:t: ZADD failed"):
        await mq.publish(one)
    with pytest.raises(BackendUnavailableError, match=r"ready:t: holds a string"):
        await mq.publish_batch(batch)
    # Nothing of either call was kept: no body, no dedup key, no counter moved.
    assert await raw.hlen(setup.key("m:body")) == 0
    assert await raw.hlen(setup.key("dedup")) == 0
    assert (await mq.stats())["total_published"] == 0
    assert await mq.queue_length() == 0

    await raw.delete(ready)
    assert await mq.publish(one) == one.id
    assert await mq.publish_batch(batch) == [m.id for m in batch]
    await setup.qm.start()
    await eventually(lambda: len(seen) == 2)
    assert sorted(seen) == sorted([(one.id, 1), (batch[1].id, 1)])
    assert (await mq.stats())["total_published"] == 3


@pytest.mark.parametrize(
    ("key", "corrupt"),
    [
        ("m:score", ("rpush", "x")),  # the second write
        ("types", ("set", "x")),  # after the ready set
        ("counts", ("hset", "published", "x")),  # the last write of all
        ("seq", ("set", "x")),  # the first
    ],
)
async def test_a_publish_failing_at_any_write_leaves_nothing_behind(
    setup: Setup, key: str, corrupt: tuple[str, ...]
) -> None:
    mq, raw = setup.mq, setup.raw
    seen: list[str] = []

    @mq.handler("t")
    async def t(msg: Message) -> None:
        seen.append(msg.id)

    name = setup.key(key)
    await raw.execute_command(corrupt[0], name, *corrupt[1:])
    one = Message(type="t")
    with pytest.raises(BackendUnavailableError, match=rf"corrupt key {re.escape(name)}"):
        await mq.publish(one)
    for left in ("m:body", "m:ready_at"):
        assert await raw.hlen(setup.key(left)) == 0
    assert await raw.exists(setup.key("ready:t")) == 0
    if key != "types":
        assert await raw.scard(setup.key("types")) == 0
    await raw.delete(name)
    assert await mq.publish(one) == one.id
    await setup.qm.start()
    await eventually(lambda: seen == [one.id])
    assert (await mq.stats())["total_published"] == 1


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        ("ready", "ready:bad: holds a string, expected a zset"),
        ("lease", "lease:bad: holds a list, expected a zset"),
    ],
)
async def test_one_corrupt_type_leaves_the_others_flowing(
    setup: Setup, caplog: pytest.LogCaptureFixture, corrupt: str, expected: str
) -> None:
    mq, raw = setup.mq, setup.raw
    good: list[int] = []
    bad: list[int] = []

    @mq.handler("good")
    async def on_good(msg: Message) -> None:
        good.append(msg.attempt)

    @mq.handler("bad")
    async def on_bad(msg: Message) -> None:
        bad.append(msg.attempt)

    # The bad type's messages wait in the structure that stays sound: scheduled (due
    # almost at once) when the ready set is overwritten, ready when the lease set is.
    delay = 0.01 if corrupt == "ready" else None
    await mq.publish_batch([Message(type="bad") for _ in range(5)], delay=delay)
    key = setup.key(f"{corrupt}:bad")
    if corrupt == "ready":
        await raw.set(key, "not a sorted set")
    else:
        await raw.rpush(key, "not", "a", "sorted", "set")
    caplog.set_level(logging.ERROR, logger="meetq.redis.work_queue")

    await setup.qm.start()
    await mq.publish_batch([Message(type="good") for _ in range(80)])
    await eventually(lambda: len(good) == 80)
    assert good == [1] * 80
    assert bad == []
    assert expected in setup.mq._queue.corrupt_types["bad"]  # type: ignore[attr-defined]
    # Named in the log, and not once per exchange: at most once a minute.
    assert len(_fault_records(caplog, expected)) == 1
    assert await setup.counters_true(waiting=5, processing=0)

    await raw.delete(key)
    await eventually(lambda: len(bad) == 5)
    # Not one attempt was charged while the type was skipped.
    assert bad == [1] * 5
    await eventually(lambda: setup.counters_true(waiting=0, processing=0))
    assert (await mq.stats())["total_processed"] == 85


async def test_a_message_with_corrupt_attempts_is_dead_lettered_naming_the_key(
    setup: Setup,
) -> None:
    mq, raw = setup.mq, setup.raw
    done: list[str] = []

    @mq.handler("t")
    async def t(msg: Message) -> None:
        done.append(msg.id)

    sent = [Message(type="t", payload={"i": i}) for i in range(3)]
    await mq.publish_batch(sent)
    victim = sent[1].id
    await raw.hset(setup.key("m:attempts"), victim, "abc")

    await setup.qm.start()
    await eventually(lambda: len(done) == 2)
    await eventually(lambda: mq.dead_letter_count())
    await eventually(lambda: setup.counters_true(waiting=0, processing=0))
    assert sorted(done) == sorted([sent[0].id, sent[2].id])
    [record] = await mq.dead_letters(10)
    assert record.id == victim
    assert f"m:attempts: field {victim}=abc is not an integer" in record.error
    # The body is kept: the message can be read, and requeued once repaired.
    assert record.message is not None and record.message.payload == {"i": 1}
    stats = await mq.stats()
    assert (stats["total_processed"], stats["total_dead_letter"]) == (2, 1)


@pytest.mark.parametrize("outcome", ["ack", "retry"])
async def test_a_corrupt_score_while_leased_leaves_the_counters_true(
    setup: Setup, outcome: str
) -> None:
    mq, raw = setup.mq, setup.raw
    ran: list[str] = []

    @mq.handler("t")
    async def t(msg: Message) -> None:
        await raw.hset(setup.key("m:score"), msg.id, "junk")
        ran.append(msg.id)
        if outcome == "retry":
            raise RuntimeError("fails once, would be retried")

    sent = Message(type="t", max_retries=1)
    await mq.publish(sent)
    await setup.qm.start()
    await eventually(lambda: ran == [sent.id])
    await eventually(lambda: setup.counters_true(waiting=0, processing=0))
    if outcome == "retry":
        await eventually(lambda: mq.dead_letter_count())
    stats = await mq.stats()
    if outcome == "ack":
        assert stats["total_processed"] == 1
        assert await raw.hlen(setup.key("m:score")) == 0
    else:
        # Its place in the queue went with the score: dead-lettered, naming the key.
        [record] = await mq.dead_letters(10)
        assert record.id == sent.id
        assert f"m:score: field {sent.id}=junk is not a meetq score" in record.error
        assert (stats["total_dead_letter"], stats["total_failed"]) == (1, 1)


async def test_a_failed_exchange_charges_no_attempt_and_strands_nothing(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    mq, raw = setup.mq, setup.raw
    ran: list[int] = []

    @mq.handler("t")
    async def t(msg: Message) -> None:
        ran.append(msg.attempt)

    await mq.publish_batch([Message(type="t") for _ in range(3)])
    token = setup.key("m:token")
    # A fixed key is shared by every type: the whole exchange fails, before any write.
    await raw.set(token, "not a hash")
    caplog.set_level(logging.WARNING, logger="meetq.message_queue")
    await setup.qm.start()
    await eventually(lambda: len(_fault_records(caplog, "m:token: holds a string")) >= 3)
    assert ran == []
    assert await setup.counters_true(waiting=3, processing=0)
    assert await raw.zcard(setup.key("ready:t")) == 3
    await raw.delete(token)
    await eventually(lambda: len(ran) == 3)
    assert ran == [1, 1, 1]


async def test_a_message_without_a_body_is_dead_lettered_naming_the_key(setup: Setup) -> None:
    mq, raw = setup.mq, setup.raw
    done: list[str] = []

    @mq.handler("t")
    async def t(msg: Message) -> None:
        done.append(msg.id)

    sent = [Message(type="t") for _ in range(2)]
    await mq.publish_batch(sent)
    await raw.hdel(setup.key("m:body"), sent[0].id)
    await setup.qm.start()
    await eventually(lambda: done == [sent[1].id])
    await eventually(lambda: mq.dead_letter_count())
    await eventually(lambda: setup.counters_true(waiting=0, processing=0))
    [record] = await mq.dead_letters(10)
    assert record.id == sent[0].id
    assert f"m:body: no field {sent[0].id} (the body is gone)" in record.error
