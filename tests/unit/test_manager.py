"""QueueManager as built by ``initialize_queue_system``: which components exist, that
building starts nothing, and the start/stop/stats lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import fakeredis
import pytest

import meetq
from meetq import (
    LocalEvent,
    LocalEventBus,
    Message,
    MessageQueue,
    PubSub,
    PubSubMessage,
    QueueManager,
    Task,
    TaskDispatcher,
    TaskScheduler,
    TaskStatus,
)

MEMORY = {"message_queue": {"type": "memory"}, "event_bus": {"type": "memory"}}


@pytest.fixture(autouse=True)
def _no_ambient_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEETQ_REDIS_URL", raising=False)


async def test_builds_every_enabled_component() -> None:
    qm = await meetq.initialize_queue_system(MEMORY)
    try:
        assert isinstance(qm, QueueManager)
        assert isinstance(qm.get_message_queue(), MessageQueue)
        assert isinstance(qm.get_pubsub(), PubSub)
        assert isinstance(qm.get_event_bus(), LocalEventBus)
        assert isinstance(qm.get_task_dispatcher(), TaskDispatcher)
        assert isinstance(qm.get_task_scheduler(), TaskScheduler)
        assert qm.config.message_queue.type == "memory"
    finally:
        await qm.stop()


async def test_task_dispatcher_from_manager_is_the_managers_own() -> None:
    qm = await meetq.initialize_queue_system(MEMORY)
    async with qm:
        assert TaskDispatcher.from_manager(qm) is qm.get_task_dispatcher()
    off = await meetq.initialize_queue_system({**MEMORY, "task_dispatcher": {"enabled": False}})
    async with off:
        with pytest.raises(meetq.ConfigError, match=r"task_dispatcher\.enabled"):
            TaskDispatcher.from_manager(off)
    with pytest.raises(meetq.ValidationError, match="manager"):
        TaskDispatcher.from_manager("not a manager")  # type: ignore[arg-type]


async def test_defaults_build_on_memory() -> None:
    qm = await meetq.initialize_queue_system()
    try:
        mq = qm.get_message_queue()
        assert mq is not None
        assert mq.backend.name == "memory"
        assert mq.name == "default"
    finally:
        await qm.stop()


async def test_disabled_sections_give_none() -> None:
    qm = await meetq.initialize_queue_system(
        {
            "message_queue": {"enabled": False},
            "event_bus": {"enabled": False},
            "task_dispatcher": {"enabled": False},
            "task_scheduler": {"enabled": False},
        }
    )
    async with qm:
        assert qm.get_task_scheduler() is None
        assert qm.get_message_queue() is None
        assert qm.get_pubsub() is None
        assert qm.get_event_bus() is None
        assert await qm.stats() == {}


async def test_only_the_message_queue_section_disabled() -> None:
    qm = await meetq.initialize_queue_system(
        {
            "message_queue": {"enabled": False},
            "event_bus": {"type": "memory"},
            "task_dispatcher": {"enabled": False},
        }
    )
    async with qm:
        assert qm.get_message_queue() is None
        assert qm.get_pubsub() is not None
        assert set(await qm.stats()) == {"pubsub", "event_bus", "task_scheduler"}


async def test_config_from_a_yaml_file(tmp_path: Any) -> None:
    path = tmp_path / "meetq.yaml"
    path.write_text("message_queue:\n  queue_name: from_file\n  workers: 2\n", encoding="utf-8")
    qm = await meetq.initialize_queue_system(path)
    try:
        mq = qm.get_message_queue()
        assert mq is not None
        assert (mq.name, mq.config.workers) == ("from_file", 2)
    finally:
        await qm.stop()


async def test_building_does_not_start_consuming() -> None:
    before = asyncio.all_tasks()
    qm = await meetq.initialize_queue_system(MEMORY)
    # Nothing runs in the background after building.
    assert asyncio.all_tasks() == before
    mq = qm.get_message_queue()
    assert mq is not None

    sent_id = await mq.publish(Message(type="work", payload={"n": 1}))
    done: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    # Registered after building, and after the publish: still in time.
    @mq.handler("work")
    async def work(message: Message) -> None:
        done.set_result(message)

    assert await mq.queue_length() == 1
    assert not done.done()
    await qm.start()
    try:
        received = await asyncio.wait_for(done, 10)
        assert received.id == sent_id
        assert received.payload == {"n": 1}
        assert await mq.queue_length() == 0  # leased now, no longer waiting
    finally:
        await qm.stop()


async def test_start_is_idempotent_and_stop_twice_is_harmless() -> None:
    qm = await meetq.initialize_queue_system(MEMORY)
    await qm.start()
    await qm.start()
    await qm.stop()
    await qm.stop()


async def test_stop_without_start_is_harmless() -> None:
    before = asyncio.all_tasks()
    qm = await meetq.initialize_queue_system(MEMORY)
    await qm.stop()
    assert asyncio.all_tasks() == before


async def test_async_with_starts_and_stops() -> None:
    before = asyncio.all_tasks()
    qm = await meetq.initialize_queue_system(MEMORY)
    mq = qm.get_message_queue()
    assert mq is not None
    done = asyncio.Event()

    @mq.handler("ping")
    async def ping(message: Message) -> None:
        done.set()

    async with qm as entered:
        assert entered is qm
        assert asyncio.all_tasks() != before  # workers run inside the block
        await mq.publish(Message(type="ping"))
        await asyncio.wait_for(done.wait(), 10)
    # Every background task is gone after the block.
    assert asyncio.all_tasks() == before


async def test_stats_aggregate_every_component() -> None:
    qm = await meetq.initialize_queue_system(MEMORY)
    mq = qm.get_message_queue()
    assert mq is not None
    await mq.publish(Message(type="unhandled.yet"))
    await mq.publish(Message(type="unhandled.yet", priority="high"))
    async with qm:
        stats = await qm.stats()
    assert set(stats) == {
        "message_queue",
        "pubsub",
        "event_bus",
        "task_dispatcher",
        "task_scheduler",
    }
    mq_stats = stats["message_queue"]
    assert mq_stats["queue_name"] == "default"
    assert mq_stats["backend"] == "memory"
    assert mq_stats["total_published"] == 2
    assert mq_stats["queue_length"]["total"] == 2
    assert mq_stats["queue_length"]["high"] == 1
    for key in ("total_processed", "total_failed", "processing_count", "dead_letter_count"):
        assert mq_stats[key] == 0, key
    assert stats["pubsub"]["total_published"] == 0
    assert "total_events" in stats["event_bus"]


async def test_pubsub_and_event_bus_work_through_the_manager() -> None:
    qm = await meetq.initialize_queue_system(MEMORY)
    pubsub, bus = qm.get_pubsub(), qm.get_event_bus()
    assert pubsub is not None
    assert bus is not None
    broadcast: asyncio.Future[PubSubMessage] = asyncio.get_running_loop().create_future()
    local: asyncio.Future[LocalEvent] = asyncio.get_running_loop().create_future()

    async def on_broadcast(message: PubSubMessage) -> None:
        broadcast.set_result(message)

    async def on_local(event: LocalEvent) -> None:
        local.set_result(event)

    bus.on("user.joined", on_local)
    async with qm:
        await pubsub.subscribe("users", on_broadcast)
        await pubsub.publish("users", PubSubMessage(type="joined", payload={"id": 7}))
        bus.emit("user.joined", {"id": 8})
        got_broadcast = await asyncio.wait_for(broadcast, 10)
        got_local = await asyncio.wait_for(local, 10)
        stats = await qm.stats()
    assert (got_broadcast.channel, got_broadcast.payload) == ("users", {"id": 7})
    assert got_local.payload == {"id": 8}
    assert stats["pubsub"]["total_published"] == 1


@pytest.mark.parametrize(
    ("queue_type", "bus_type"), [("memory", "memory"), ("redis", "redis_pubsub")]
)
async def test_one_backend_object_for_a_name_and_its_alias(queue_type: str, bus_type: str) -> None:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    qm = await meetq.initialize_queue_system(
        {"message_queue": {"type": queue_type}, "event_bus": {"type": bus_type}}, redis=client
    )
    try:
        # No public accessor for the backends; the point is that there is one to close.
        assert len({id(b) for b in qm._backends.values()}) == 1
    finally:
        await qm.stop()
        await client.aclose()


async def test_redis_client_passed_in_is_used_as_is() -> None:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeAsyncRedis(server=server)
    qm = await meetq.initialize_queue_system(
        {
            "redis": {"url": "redis://203.0.113.1:1/0", "key_prefix": "mgr"},
            "message_queue": {"type": "redis", "queue_name": "svc"},
            "event_bus": {"type": "redis_pubsub"},
        },
        redis=client,
    )
    mq = qm.get_message_queue()
    assert mq is not None
    assert mq.backend.name == "redis"
    await mq.publish(Message(type="job"))
    # The key is in that fake server (the unreachable url was never dialled).
    other = fakeredis.FakeAsyncRedis(server=server)
    keys = {key.decode() async for key in other.scan_iter("mgr:*")}
    assert keys, "nothing written to the given client's server"
    assert all(key.startswith("mgr:{svc}:") for key in keys)
    await qm.stop()
    # The caller's client is left open for the caller to close.
    assert await client.ping() is True
    await client.aclose()
    await other.aclose()


async def test_task_dispatcher_needs_the_message_queue() -> None:
    with pytest.raises(meetq.ConfigError) as info:
        await meetq.initialize_queue_system(
            {"message_queue": {"enabled": False}, "event_bus": {"type": "memory"}}
        )
    assert info.value.key == "task_dispatcher.enabled"


async def test_task_dispatcher_runs_a_task_through_the_manager() -> None:
    qm = await meetq.initialize_queue_system(
        {**MEMORY, "task_dispatcher": {"service_name": "ai", "enable_callbacks": False}}
    )
    dispatcher = qm.get_task_dispatcher()
    assert dispatcher is not None
    assert (dispatcher.service_name, dispatcher.enable_callbacks) == ("ai", False)
    dispatcher.serve("speech_recognition", lambda task: f"text of {task.payload['audio']}")
    assert dispatcher.routes == {"speech_recognition": "ai"}
    async with qm:
        sent = await dispatcher.dispatch_task(
            meetq.TaskRequest(type="speech_recognition", payload={"audio": "a.wav"})
        )
        done = await dispatcher.wait(sent.task_id, timeout=10)
        stats = await qm.stats()
    assert (done.status, done.result, done.service) == ("completed", "text of a.wav", "ai")
    assert stats["task_dispatcher"]["total_completed"] == 1
    with pytest.raises(meetq.ClosedError):
        await dispatcher.dispatch_task(meetq.TaskRequest(type="speech_recognition"))


async def test_task_scheduler_runs_a_task_through_the_manager() -> None:
    qm = await meetq.initialize_queue_system(
        {**MEMORY, "task_scheduler": {"workers": 2, "buffer_size": 10}}
    )
    scheduler = qm.get_task_scheduler()
    assert scheduler is not None

    async def double(task: Task) -> int:
        return int(task.payload["n"]) * 2

    task_id = scheduler.submit_task(Task(type="double", handler=double, payload={"n": 21}))
    async with qm:
        done = await scheduler.wait(task_id, timeout=10)
        stats = await qm.stats()
    assert done.status is TaskStatus.COMPLETED and done.result == 42
    assert stats["task_scheduler"]["workers"] == 2
    assert stats["task_scheduler"]["buffer_size"] == 10
    with pytest.raises(meetq.ClosedError):  # stopped with the manager
        scheduler.submit_task(Task(type="double", handler=double, payload={"n": 1}))


async def test_stop_grace_bounds_every_component_and_releases_uncharged() -> None:
    # `meetq worker --grace`: one grace for the handlers, whatever shutdown_grace says.
    # Two backends on one named broker: the second looks after the first closed.
    config = {
        "message_queue": {"type": "memory", "shutdown_grace": "1h"},
        "memory": {"broker": "stop-grace"},
        **_NO_BUS,
    }
    qm = await meetq.initialize_queue_system(config)
    mq = qm.get_message_queue()
    assert mq is not None
    started = asyncio.Event()

    @mq.handler("stuck")
    async def stuck(msg: Message) -> None:
        started.set()
        await asyncio.Event().wait()

    await mq.publish(Message(type="stuck"))
    await qm.start()
    await asyncio.wait_for(started.wait(), 10)
    with pytest.raises(meetq.ValidationError) as info:
        await qm.stop(grace=-1)
    assert info.value.field == "grace"
    other = await meetq.initialize_queue_system(config)  # keeps the broker alive
    await asyncio.wait_for(qm.stop(grace=0.05), 10)  # far below the hour
    other_mq = other.get_message_queue()
    assert other_mq is not None
    stats = await other_mq.stats()
    await other.stop()
    assert (stats["queue_length"]["total"], stats["total_retried"]) == (1, 0)


_NO_BUS = {"event_bus": {"enabled": False}}


async def test_stop_with_a_stuck_handler_ends_on_fakeredis() -> None:
    # Reported hang: the handler's release publishes a wake-up just as stop() closes the
    # backend's listener; fakeredis's read then completed under Python 3.11's wait_for,
    # which swallowed the listener's cancellation, and stop() waited for ever.
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    config = {
        "redis": {"key_prefix": "stuck"},
        "message_queue": {"type": "redis", "queue_name": "q", "shutdown_grace": 0.05},
        **_NO_BUS,
    }
    qm = await meetq.initialize_queue_system(config, redis=client)
    mq = qm.get_message_queue()
    assert mq is not None
    started = asyncio.Event()

    @mq.handler("stuck")
    async def stuck(msg: Message) -> None:
        started.set()
        await asyncio.Event().wait()

    await mq.publish(Message(type="stuck"))
    await qm.start()
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.wait_for(qm.stop(), 10)  # hung for ever before
    other = await meetq.initialize_queue_system(config, redis=client)
    other_mq = other.get_message_queue()
    assert other_mq is not None
    stats = await other_mq.stats()  # released uncharged: waiting again, no retry
    await other.stop()
    assert (stats["queue_length"]["total"], stats["total_retried"]) == (1, 0)


async def test_stop_gives_up_on_a_handler_that_ignores_its_cancellation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    qm = await meetq.initialize_queue_system({"message_queue": {"type": "memory"}, **_NO_BUS})
    mq = qm.get_message_queue()
    assert mq is not None
    started, release = asyncio.Event(), asyncio.Event()

    @mq.handler("stubborn")
    async def stubborn(msg: Message) -> None:
        started.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # ignores stop()
                await release.wait()

    await mq.publish(Message(type="stubborn"))
    await qm.start()
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.wait_for(qm.stop(grace=0), 10)  # grace + CANCELLED_HANDLER_WAIT
    assert "still running" in caplog.text and "after being cancelled on stop" in caplog.text
    release.set()  # let the stubborn task end before the loop closes
    await asyncio.sleep(0)
