"""``type: memory`` behaves like one Redis per process: managers built from separate
configs in one process meet on queue and channel names, as two processes on one Redis
do; ``memory.broker`` names another broker, and ``isolated`` gives a private one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import meetq
from meetq import DispatchStatus, PubSubMessage, QueueManager, ReceivedTask, TaskRequest


def _service(name: str, namespace: str, **memory: Any) -> dict[str, Any]:
    """The config one service of a two-service setup would load, on the memory backend."""
    config: dict[str, Any] = {
        "message_queue": {"type": "memory", "queue_name": namespace},
        "event_bus": {"type": "memory", "namespace": namespace},
        "task_dispatcher": {"service_name": name},
    }
    if memory:
        config["memory"] = memory
    return config


async def _two_services(namespace: str, **memory: Any) -> tuple[QueueManager, QueueManager]:
    gateway = await meetq.initialize_queue_system(_service("gateway", namespace, **memory))
    worker = await meetq.initialize_queue_system(_service("ai-worker", namespace, **memory))
    return gateway, worker


async def test_a_dispatcher_reaches_a_service_in_another_manager(meetq_namespace: str) -> None:
    gateway, worker = await _two_services(meetq_namespace)
    client, server = gateway.get_task_dispatcher(), worker.get_task_dispatcher()
    assert client is not None and server is not None

    @server.task("asr")
    async def recognize(task: ReceivedTask) -> dict[str, Any]:
        return {"text": f"heard {task.payload['audio']}"}

    client.register_route("asr", "ai-worker")
    async with gateway, worker:
        sent = await client.dispatch_task(TaskRequest(type="asr", payload={"audio": "a.wav"}))
        done = await client.wait(sent.task_id, timeout=10)
    assert (done.status, done.service, done.result) == (
        DispatchStatus.COMPLETED,
        "ai-worker",
        {"text": "heard a.wav"},
    )


async def test_a_broadcast_reaches_a_subscriber_in_another_manager(meetq_namespace: str) -> None:
    gateway, worker = await _two_services(meetq_namespace)
    speaker, listener = gateway.get_pubsub(), worker.get_pubsub()
    assert speaker is not None and listener is not None
    heard: asyncio.Future[PubSubMessage] = asyncio.get_running_loop().create_future()
    await listener.subscribe("meetings", heard.set_result)
    async with gateway, worker:
        receivers = await speaker.publish("meetings", PubSubMessage(type="started", payload={}))
        message = await asyncio.wait_for(heard, 10)
    assert (receivers, message.channel, message.type) == (1, "meetings", "started")


async def test_closing_one_manager_leaves_the_others_queue_working(meetq_namespace: str) -> None:
    first, second = await _two_services(meetq_namespace)
    mq = second.get_message_queue()
    assert mq is not None
    got: asyncio.Queue[str] = asyncio.Queue()

    @mq.handler("job")
    async def job(message: meetq.Message) -> None:
        await got.put(message.payload["n"])

    async with second:
        async with first:
            other = first.get_message_queue()
            assert other is not None
            await other.publish(meetq.Message(type="job", payload={"n": "from first"}))
            assert await asyncio.wait_for(got.get(), 10) == "from first"
        # ``first`` is closed: its own queue refuses work, ``second``'s goes on.
        with pytest.raises(meetq.ClosedError):
            await other.publish(meetq.Message(type="job", payload={"n": "too late"}))
        await mq.publish(meetq.Message(type="job", payload={"n": "after"}))
        assert await asyncio.wait_for(got.get(), 10) == "after"


async def test_the_broker_lives_while_a_backend_uses_it(meetq_namespace: str) -> None:
    # Messages left on a queue stay while another manager on the broker is open, and
    # are gone once the last one closes: nothing in memory outlives its users.
    keeper = await meetq.initialize_queue_system(_service("keeper", meetq_namespace))
    async with keeper:
        producer = await meetq.initialize_queue_system(_service("producer", meetq_namespace))
        async with producer:
            mq = producer.get_message_queue()
            assert mq is not None
            await mq.publish(meetq.Message(type="kept", payload={}))
        consumer = await meetq.initialize_queue_system(_service("consumer", meetq_namespace))
        async with consumer:
            mq = consumer.get_message_queue()
            assert mq is not None
            assert (await mq.stats())["queue_length"]["total"] == 1
    last = await meetq.initialize_queue_system(_service("late", meetq_namespace))
    async with last:
        mq = last.get_message_queue()
        assert mq is not None
        assert (await mq.stats())["queue_length"]["total"] == 0


@pytest.mark.parametrize(
    ("first", "second", "meets"),
    [
        ({}, {}, True),
        ({"broker": "tenant-a"}, {"broker": "tenant-a"}, True),
        ({"broker": "tenant-a"}, {"broker": "tenant-b"}, False),
        ({"broker": "tenant-a"}, {}, False),
        ({"broker": "isolated"}, {"broker": "isolated"}, False),
        ({"broker": "isolated"}, {}, False),
    ],
)
async def test_the_broker_key_chooses_who_meets(
    meetq_namespace: str, first: dict[str, str], second: dict[str, str], meets: bool
) -> None:
    a = await meetq.initialize_queue_system(_service("a", meetq_namespace, **first))
    b = await meetq.initialize_queue_system(_service("b", meetq_namespace, **second))
    async with a, b:
        sender, other = a.get_message_queue(), b.get_message_queue()
        assert sender is not None and other is not None
        await sender.publish(meetq.Message(type="probe", payload={}))
        assert (await other.stats())["queue_length"]["total"] == (1 if meets else 0)


def test_the_broker_key_is_checked_at_load() -> None:
    assert meetq.load_config({"memory": {"broker": "tenant-a"}}).section(
        meetq.MemoryConfig
    ).broker == ("tenant-a")
    assert meetq.load_config({}).section(meetq.MemoryConfig).broker == "default"
    with pytest.raises(meetq.ConfigError) as info:
        meetq.load_config({"memory": {"borker": "x"}})
    assert str(info.value) == "config memory.borker='x': unknown key; did you mean 'broker'?"
    with pytest.raises(meetq.ConfigError) as info:
        meetq.load_config({"memory": {"broker": ""}})
    assert info.value.key == "memory.broker"


async def test_a_closed_backend_gets_no_more_wake_ups_from_a_shared_queue(
    meetq_namespace: str,
) -> None:
    from meetq.backend import StoredMessage, WorkQueueOptions
    from meetq.backends.memory._backend import MemoryBackend

    closing, staying = MemoryBackend(broker=meetq_namespace), MemoryBackend(broker=meetq_namespace)
    woken: list[str] = []
    try:
        mine = closing.work_queue("jobs", WorkQueueOptions())
        theirs = staying.work_queue("jobs", WorkQueueOptions())
        await mine.listen(lambda: woken.append("closing"))
        await theirs.listen(lambda: woken.append("staying"))
        await closing.aclose()
        with pytest.raises(meetq.ClosedError):
            await mine.enqueue([StoredMessage(id="m0", type="t", priority=1, body=b"{}")])
        await theirs.enqueue([StoredMessage(id="m1", type="t", priority=1, body=b"{}")])
        assert "staying" in woken and "closing" not in woken
    finally:
        await staying.aclose()
