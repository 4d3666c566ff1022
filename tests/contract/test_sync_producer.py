"""The sync producer (``meetq.sync``) meets the async side on every built-in setup.

Memory (the sync calls handed to the loop holding the broker), Redis on fakeredis (a
sync ``FakeRedis`` sharing one ``FakeServer`` with the async client) and Redis on a
private real redis-server: a message the sync producer stores is consumed by an async
worker, and what async code publishes or dead-letters the sync calls see. Sync calls
run on threads (``asyncio.to_thread``), as a WSGI server's would.

Not in the shipped suite (``meetq.testing``): a third-party backend offers a sync face
only if it brings a ``sync_factory``, and the example plugin brings none; the registry
refusing it by name is tested below.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fakeredis
import pytest

from meetq import (
    BackendError,
    BackendRegistry,
    BackendSpec,
    ClosedError,
    Message,
    MessageQueue,
    Priority,
    PubSubMessage,
    QueueManager,
    ResultError,
    ValidationError,
    initialize_queue_system,
)
from meetq.backends.memory import plugin as memory_plugin
from meetq.sync import SyncProducer
from meetq.testing.pubsub_suite import Collector
from meetq.testing.work_queue_suite import eventually


class Setup:
    """One backend setup: the config both sides read, and each side's client."""

    def __init__(self, kind: str, namespace: str, redis_url: str | None) -> None:
        self.kind = kind
        queue = {
            "queue_name": namespace,
            "poll_interval": "50ms",
            "max_retries": 0,
            "result_ttl": "60s",
        }
        if kind == "memory":
            self.config: dict[str, Any] = {
                "memory": {"broker": namespace},
                "message_queue": {"type": "memory", **queue},
                "event_bus": {"type": "memory", "namespace": namespace},
            }
        else:
            self.config = {
                "redis": {"key_prefix": namespace, **({"url": redis_url} if redis_url else {})},
                "message_queue": {"type": "redis", **queue},
                "event_bus": {"type": "redis_pubsub", "namespace": namespace},
            }
        self.config["task_dispatcher"] = {"enabled": False}
        self._server = fakeredis.FakeServer() if kind == "fakeredis" else None

    def async_client(self) -> Any:
        return fakeredis.FakeAsyncRedis(server=self._server) if self._server else None

    def producer(self) -> SyncProducer:
        client = fakeredis.FakeRedis(server=self._server) if self._server else None
        return SyncProducer(self.config, redis=client)


@pytest.fixture(params=["memory", "fakeredis", "redis"])
def setup(request: pytest.FixtureRequest, meetq_namespace: str) -> Setup:
    url = request.getfixturevalue("meetq_redis_url") if request.param == "redis" else None
    return Setup(request.param, meetq_namespace, url)


@pytest.fixture
async def manager(setup: Setup) -> AsyncIterator[QueueManager]:
    # Built first: on memory it is the async side whose loop holds the broker.
    qm = await initialize_queue_system(setup.config, redis=setup.async_client())
    yield qm
    await qm.stop()


@pytest.fixture
def producer(setup: Setup, manager: QueueManager) -> Iterator[SyncProducer]:
    with setup.producer() as p:
        yield p


def _queue(qm: QueueManager) -> MessageQueue:
    mq = qm.get_message_queue()
    assert mq is not None
    return mq


async def test_sync_publish_is_consumed_by_an_async_worker(
    manager: QueueManager, producer: SyncProducer
) -> None:
    mq = _queue(manager)
    seen: list[Message] = []
    got = asyncio.Event()

    @mq.handler("job")
    async def handle(message: Message) -> None:
        seen.append(message)
        if len(seen) == 4:
            got.set()

    one = Message(type="job", payload={"n": 0}, headers={"h": "v"}, priority=Priority.LOW)
    batch = [Message(type="job", payload={"n": i}, priority=Priority.HIGH) for i in (1, 2, 3)]
    first = await asyncio.to_thread(producer.publish, one)
    ids = await asyncio.to_thread(producer.publish_batch, batch)
    assert first == one.id and ids == [m.id for m in batch]
    await manager.start()
    await asyncio.wait_for(got.wait(), 10)
    # Priority then FIFO, as for an async publish; every field arrives as published.
    assert [m.payload["n"] for m in seen] == [1, 2, 3, 0]
    assert seen[-1].headers == {"h": "v"} and seen[-1].priority is Priority.LOW
    await eventually(lambda: _processed_is(producer, 4))


async def _processed_is(producer: SyncProducer, count: int) -> bool:
    return (await asyncio.to_thread(producer.stats))["total_processed"] == count


async def _dead_count_is(producer: SyncProducer, count: int) -> bool:
    return await asyncio.to_thread(producer.dead_letter_count) == count


async def test_sync_delayed_and_deduplicated_publishes(
    manager: QueueManager, producer: SyncProducer
) -> None:
    first = Message(type="job", dedup_key="k")
    again = Message(type="job", dedup_key="k")
    assert await asyncio.to_thread(producer.publish, first) == first.id
    assert await asyncio.to_thread(producer.publish, again) == first.id  # the holder's id
    await asyncio.to_thread(lambda: producer.publish(Message(type="job"), delay=3600))
    stats = await asyncio.to_thread(producer.stats)
    assert stats["total_published"] == 2
    assert stats["queue_length"]["total"] == 2
    full = await _queue(manager).stats()
    assert {k: full[k] for k in stats} == stats  # MessageQueue.stats' queue-wide part


async def test_async_side_is_seen_by_sync_inspection(
    manager: QueueManager, producer: SyncProducer
) -> None:
    mq = _queue(manager)

    @mq.handler("bad")
    @mq.handler("worse")
    async def fail(message: Message) -> None:
        raise RuntimeError("boom")

    await mq.publish_batch([Message(type="bad"), Message(type="worse"), Message(type="bad")])
    await mq.publish(Message(type="other", priority=Priority.CRITICAL))
    await manager.start()
    # The sync side sees the async side's dead letters.
    await eventually(lambda: _dead_count_is(producer, 3))
    await mq.stop()  # nobody consumes the requeued ones, so they are counted as waiting
    stats = await asyncio.to_thread(producer.stats)
    expected = await mq.stats()
    assert {k: expected[k] for k in stats} == stats
    assert stats["queue_length"]["critical"] == 1 and stats["total_failed"] == 3
    # A type filter, as on the async side: only "worse" moves, then the rest.
    requeue = producer.requeue_dead_letters
    assert await asyncio.to_thread(requeue, 10, message_type="worse") == 1
    assert [d.type for d in await mq.dead_letters()] == ["bad", "bad"]
    assert await asyncio.to_thread(requeue, 10, message_type="nothing-dead") == 0
    assert await asyncio.to_thread(requeue, 10) == 2
    assert await mq.dead_letter_count() == 0
    assert await mq.queue_length() == 4


async def test_many_threads_publish_at_once(
    manager: QueueManager, producer: SyncProducer
) -> None:
    threads, each = 8, 25
    start = threading.Barrier(threads)

    def publish_many(t: int) -> list[str]:
        start.wait()
        return [producer.publish(Message(type="job", payload={"t": t})) for _ in range(each)]

    def run_all() -> list[str]:
        with ThreadPoolExecutor(threads) as pool:
            return [i for ids in pool.map(publish_many, range(threads)) for i in ids]

    ids = await asyncio.to_thread(run_all)
    assert len(set(ids)) == threads * each
    mq = _queue(manager)
    seen: set[str] = set()

    @mq.handler("job")
    async def handle(message: Message) -> None:
        seen.add(message.id)

    await manager.start()
    await eventually(lambda: len(seen) == threads * each)
    assert seen == set(ids)


async def test_sync_pubsub_publish_reaches_async_subscribers(
    manager: QueueManager, producer: SyncProducer
) -> None:
    ps = manager.get_pubsub()
    assert ps is not None
    got = Collector()
    await ps.subscribe("news", got)
    await manager.start()
    sent = PubSubMessage(type="hello", payload={"x": 1})
    receivers = await asyncio.to_thread(producer.pubsub.publish, "news", sent)
    assert receivers >= 1
    [received] = await got.wait_for(1)
    assert received.payload == {"x": 1} and received.source  # filled in as PubSub fills it


async def test_same_validation_as_the_async_api(
    manager: QueueManager, producer: SyncProducer
) -> None:
    mq = _queue(manager)
    bad_calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("publish", ("not a message",), {}),
        ("publish", (Message(type="job"),), {"delay": -1}),
        ("publish", (Message(type="job"),), {"delay": 1, "not_before": 2}),
        ("publish_batch", ("nope",), {}),
        ("publish_batch", ([Message(type="job"), 3],), {}),
        ("requeue_dead_letters", (-1,), {}),
        ("requeue_dead_letters", (1,), {"message_type": ""}),
        ("requeue_dead_letters", (1,), {"message_type": 3}),
    ]
    for name, args, kwargs in bad_calls:
        with pytest.raises(ValidationError) as sync_error:
            await asyncio.to_thread(getattr(producer, name), *args, **kwargs)
        with pytest.raises(ValidationError) as async_error:
            await getattr(mq, name)(*args, **kwargs)
        assert str(sync_error.value) == str(async_error.value), name
        assert sync_error.value.field == async_error.value.field
    with pytest.raises(ValidationError, match="channel"):
        producer.pubsub.publish("", PubSubMessage(type="x"))
    assert (await asyncio.to_thread(producer.stats))["total_published"] == 0  # nothing stored


async def test_closed_producer_refuses_every_call(setup: Setup, manager: QueueManager) -> None:
    producer = setup.producer()
    pubsub = producer.pubsub
    await asyncio.to_thread(producer.publish, Message(type="job"))
    producer.close()
    producer.close()  # idempotent
    calls = [
        lambda: producer.publish(Message(type="job")),
        lambda: producer.publish_batch([Message(type="job")]),
        producer.stats,
        producer.dead_letter_count,
        producer.requeue_dead_letters,
        lambda: pubsub.publish("news", PubSubMessage(type="x")),
    ]
    for call in calls:
        with pytest.raises(ClosedError):
            await asyncio.to_thread(call)


def test_a_backend_without_a_sync_face_is_refused_by_name() -> None:
    registry = BackendRegistry()
    memory_plugin.meetq_register_backends(registry)
    spec = registry.get("memory")
    registry.register(
        BackendSpec(name="asynconly", factory=spec.factory, description="no sync_factory")
    )
    with pytest.raises(BackendError, match=r"message_queue.type='asynconly'.*no sync producer"):
        SyncProducer({"message_queue": {"type": "asynconly"}}, registry=registry)


async def test_sync_status_cancel_and_result_meet_the_async_worker(
    manager: QueueManager, producer: SyncProducer
) -> None:
    mq = _queue(manager)
    started = asyncio.Event()
    stopped: list[str] = []

    @mq.handler("slow")
    async def slow(message: Message) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.append(message.id)
            raise

    @mq.handler("quick")
    async def quick(message: Message) -> dict[str, int]:
        return {"n": message.payload["n"]}

    later = await asyncio.to_thread(producer.publish, Message(type="quick"), delay=60)
    assert (await asyncio.to_thread(producer.status, later)).state == "delayed"
    assert await asyncio.to_thread(producer.cancel, later) is True
    assert await asyncio.to_thread(producer.cancel, later) is False
    assert (await asyncio.to_thread(producer.status, later)).state == "cancelled"
    await manager.start()
    running = await asyncio.to_thread(producer.publish, Message(type="slow"))
    await asyncio.wait_for(started.wait(), 10)
    status = await asyncio.to_thread(producer.status, running)
    assert status.state == "running" and status.worker == mq.worker_name
    assert await asyncio.to_thread(producer.cancel, running) is True
    await eventually(lambda: stopped == [running])
    done = await asyncio.to_thread(producer.publish, Message(type="quick", payload={"n": 5}))
    assert await asyncio.to_thread(producer.result, done, 10) == {"n": 5}
    with pytest.raises(ResultError) as info:
        await asyncio.to_thread(producer.result, running, 10)
    assert info.value.state == "cancelled"
    with pytest.raises(ValidationError):
        await asyncio.to_thread(producer.status, "")
