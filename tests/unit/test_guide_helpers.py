"""The guide's helpers (meetq/manager/_guide.py) and the manager's lifecycle events."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest

import meetq
from meetq import LocalEvent, Message, Priority, PubSubMessage, Task
from meetq.core._lifecycle import Lifecycle

MEMORY: dict[str, Any] = {"message_queue": {"type": "memory"}, "event_bus": {"type": "memory"}}


class _Lines(logging.Handler):
    """Log lines of ``meetq.common_handlers``; ``wait_for`` a text to appear."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.changed.set()  # the handlers log on the loop thread

    async def wait_for(self, text: str) -> None:
        async def seen() -> None:
            while text not in self.lines:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(seen(), 10)


@pytest.fixture
def lines() -> Iterator[_Lines]:
    logger = logging.getLogger("meetq.common_handlers")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_register_common_handlers_logs_system_events_and_the_lifecycle(
    lines: _Lines,
) -> None:
    qm = await meetq.initialize_queue_system(MEMORY)
    await meetq.register_common_handlers(qm, "my-service")
    async with qm:
        await lines.wait_for("[my-service] service started event received")
        assert await meetq.publish_system_event(qm, "config_reloaded", {"v": 2}) == 1
        await lines.wait_for("[my-service] received system event 'config_reloaded'")
    # stop() emitted service_stopping before it stopped the bus, so it was handled.
    assert "[my-service] service stopping event received" in lines.lines


async def test_the_manager_emits_started_and_stopping_without_any_helper() -> None:
    qm = await meetq.initialize_queue_system(MEMORY)
    bus = qm.get_event_bus()
    assert bus is not None
    mq = qm.get_message_queue()
    assert mq is not None
    seen: list[LocalEvent] = []
    mq_running: list[bool] = []
    started = asyncio.Event()

    async def record(event: LocalEvent) -> None:
        seen.append(event)
        mq_running.append(mq.lifecycle is Lifecycle.RUNNING)
        started.set()

    bus.on(meetq.SERVICE_STARTED, record)
    bus.on(meetq.SERVICE_STOPPING, record)
    await qm.start()
    await qm.start()  # idempotent: no second event
    await asyncio.wait_for(started.wait(), 10)  # emitted, not waited for, by start()
    await qm.stop()
    await qm.stop()
    assert [(e.type, e.source, dict(e.payload)) for e in seen] == [
        ("service_started", "meetq.manager", {}),
        ("service_stopping", "meetq.manager", {}),
    ]
    # Both ran while the queue was running: stop() waited for the stopping handlers.
    assert mq_running == [True, True]


async def test_a_manager_never_started_emits_nothing_on_stop() -> None:
    qm = await meetq.initialize_queue_system(MEMORY)
    bus = qm.get_event_bus()
    assert bus is not None
    await qm.stop()
    assert bus.stats()["total_events"] == 0 and bus.stats()["dropped_events"] == 0


async def test_publish_task_and_emit_local_event_reach_their_handlers() -> None:
    qm = await meetq.initialize_queue_system(MEMORY)
    mq, bus = qm.get_message_queue(), qm.get_event_bus()
    assert mq is not None and bus is not None
    got_message: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
    got_event: asyncio.Future[LocalEvent] = asyncio.get_running_loop().create_future()

    async def on_message(message: Message) -> None:
        got_message.set_result(message)

    async def on_event(event: LocalEvent) -> None:
        got_event.set_result(event)

    mq.register_handler(meetq.TaskType.AUDIO_DENOISING, on_message)
    bus.on("stream_started", on_event)
    async with qm:
        message_id = await meetq.publish_task(
            qm, meetq.TaskType.AUDIO_DENOISING, Priority.HIGH, {"clip": "a"}, "media"
        )
        meetq.emit_local_event(qm, "stream_started", {"stream_id": "s1"}, "media_service")
        message = await asyncio.wait_for(got_message, 10)
        event = await asyncio.wait_for(got_event, 10)
    assert (message.id, message.type) == (message_id, "audio_denoising")
    assert message.priority is Priority.HIGH
    assert (dict(message.payload), message.source) == ({"clip": "a"}, "media")
    assert (dict(event.payload), event.source) == ({"stream_id": "s1"}, "media_service")


async def test_schedule_delayed_task_runs_it_later_with_the_guides_limits() -> None:
    qm = await meetq.initialize_queue_system(MEMORY)
    scheduler = qm.get_task_scheduler()
    assert scheduler is not None
    ran_at: list[float] = []

    async def cleanup(task: Task) -> str:
        ran_at.append(time.time())
        return f"cleaned {task.payload['what']}"

    async with qm:
        before = time.time()
        task_id = meetq.schedule_delayed_task(
            qm, "cleanup", Priority.LOW, {"what": "tmp"}, "50ms", cleanup
        )
        snapshot = await scheduler.wait(task_id, timeout=10)
    assert snapshot.status is meetq.TaskStatus.COMPLETED and snapshot.result == "cleaned tmp"
    assert (snapshot.task.timeout, snapshot.task.max_retries) == (60.0, 3)
    assert snapshot.task.scheduled_at is not None and snapshot.task.scheduled_at >= before + 0.05
    assert ran_at[0] >= snapshot.task.scheduled_at
    with pytest.raises(meetq.ValidationError, match="delay='soon'"):
        meetq.schedule_delayed_task(qm, "cleanup", Priority.LOW, {}, "soon", cleanup)


async def test_get_queue_stats_and_shutdown_queue_system() -> None:
    qm = await meetq.initialize_queue_system(MEMORY)
    await qm.start()
    stats = await meetq.get_queue_stats(qm)
    assert set(stats) == {
        "message_queue",
        "pubsub",
        "event_bus",
        "task_scheduler",
        "task_dispatcher",
    }
    await meetq.shutdown_queue_system(qm)
    await meetq.shutdown_queue_system(qm)  # idempotent, like stop()
    assert qm.lifecycle is Lifecycle.STOPPED


async def test_a_helper_on_a_disabled_component_names_the_key() -> None:
    qm = await meetq.initialize_queue_system(
        {
            "message_queue": {"enabled": False},
            "task_dispatcher": {"enabled": False},
            "task_scheduler": {"enabled": False},
            "event_bus": {"enabled": False},
        }
    )

    async def handler(task: Task) -> None:
        return None

    with pytest.raises(meetq.ConfigError, match=r"config event_bus\.enabled=False"):
        await meetq.publish_system_event(qm, "x")
    with pytest.raises(meetq.ConfigError, match=r"event_bus\.enabled"):
        meetq.emit_local_event(qm, "x")
    with pytest.raises(meetq.ConfigError, match=r"message_queue\.enabled"):
        await meetq.publish_task(qm, "x")
    with pytest.raises(meetq.ConfigError, match=r"task_scheduler\.enabled"):
        meetq.schedule_delayed_task(qm, "x", Priority.LOW, {}, 1, handler)
    # Nothing to register on: skipped, as the guide's Go skips a nil component.
    await meetq.register_common_handlers(qm, "svc")
    with pytest.raises(meetq.ValidationError, match="service_name"):
        await meetq.register_common_handlers(qm, "")
    await qm.stop()


async def test_message_queue_and_pubsub_from_a_config_on_memory() -> None:
    mq = meetq.message_queue_from(
        None, queue_name="ai_tasks", workers=4, visibility_timeout=30, poll_interval="100ms"
    )
    assert isinstance(mq, meetq.MessageQueue)
    assert (mq.name, mq.config.workers, mq.config.poll_interval) == ("ai_tasks", 4, 0.1)
    done: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    async def handler(message: Message) -> None:
        done.set_result(message)

    mq.register_handler("speech_recognition", handler)
    async with mq:
        await mq.publish(Message(type="speech_recognition", payload={"audio_data": "b64"}))
        assert (await asyncio.wait_for(done, 10)).payload == {"audio_data": "b64"}
    # stop() closed the backend built for it.
    with pytest.raises(meetq.ClosedError):
        await mq.queue_length()

    ps = meetq.pubsub_from({"event_bus": {"type": "memory", "namespace": "svc"}})
    assert isinstance(ps, meetq.PubSub) and ps.config.namespace == "svc"
    heard: asyncio.Future[PubSubMessage] = asyncio.get_running_loop().create_future()

    async def on(message: PubSubMessage) -> None:
        heard.set_result(message)

    async with ps:
        await ps.subscribe("meeting_events", on)
        await ps.publish("meeting_events", PubSubMessage(type="user_joined", payload={"u": 1}))
        assert (await asyncio.wait_for(heard, 10)).type == "user_joined"


async def test_from_a_redis_client_uses_it_as_is_and_leaves_it_open() -> None:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    try:
        mq = meetq.message_queue_from(
            {"redis": {"url": "redis://203.0.113.1:1/0", "key_prefix": "g12"}},
            redis=client,
            type="redis",
            queue_name="from_client",
        )
        assert mq.backend.name == "redis"
        await mq.publish(Message(type="job"))
        assert await mq.queue_length() == 1  # through the given client: the url is unroutable
        await mq.stop()
        ps = meetq.pubsub_from(None, client, type="redis_pubsub")
        await ps.start()
        assert await ps.publish("c", PubSubMessage(type="t")) == 0
        await ps.stop()
        assert await client.ping() is True  # the caller's client stays the caller's
    finally:
        await client.aclose()


def test_bad_types_and_keys_are_named() -> None:
    with pytest.raises(meetq.BackendNotFoundError, match=r"message_queue\.type"):
        meetq.message_queue_from(type="rabbit")
    with pytest.raises(meetq.ConfigError, match=r"message_queue\.wrokers"):
        meetq.message_queue_from(wrokers=4)
    with pytest.raises(meetq.BackendNotFoundError, match=r"event_bus\.type"):
        meetq.pubsub_from({"event_bus": {"type": "kafka"}})


async def test_a_stuck_stopping_handler_delays_stop_by_the_bus_grace_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    qm = await meetq.initialize_queue_system(
        {**MEMORY, "event_bus": {"type": "memory", "shutdown_grace": "100ms"}}
    )
    bus = qm.get_event_bus()
    assert bus is not None
    release = asyncio.Event()

    async def stuck(event: LocalEvent) -> None:
        await release.wait()

    bus.on(meetq.SERVICE_STOPPING, stuck)
    await qm.start()
    await qm.stop()  # returns: the grace bounds the wait, then the bus cancels the handler
    assert "'service_stopping' not handled within 0.1s" in caplog.text
    assert qm.lifecycle is Lifecycle.STOPPED
