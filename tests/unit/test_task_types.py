"""``TaskType`` members go wherever a type string goes and are stored as the plain string."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import meetq
from meetq import (
    JsonSerializer,
    LocalEvent,
    Message,
    PubSubMessage,
    ReceivedTask,
    Task,
    TaskRequest,
    TaskType,
)

MEMORY = {
    "message_queue": {"type": "memory", "queue_name": "task-types"},
    "event_bus": {"type": "memory"},
    "task_dispatcher": {"service_name": "ai-worker"},
}


@pytest.fixture(autouse=True)
def _no_ambient_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEETQ_REDIS_URL", raising=False)


def test_members_are_their_plain_strings() -> None:
    assert TaskType.SPEECH_RECOGNITION == "speech_recognition"
    assert TaskType("webrtc_negotiation") is TaskType.WEBRTC_NEGOTIATION
    assert f"{TaskType.RECORDING}@svc" == "recording@svc"
    assert {"speech_recognition": 1}[TaskType.SPEECH_RECOGNITION] == 1


@pytest.mark.parametrize(
    "value",
    [
        Message(type=TaskType.SPEECH_RECOGNITION),
        PubSubMessage(type=TaskType.SPEECH_RECOGNITION),
        LocalEvent(type=TaskType.SPEECH_RECOGNITION),
        TaskRequest(type=TaskType.SPEECH_RECOGNITION),
        Task(type=TaskType.SPEECH_RECOGNITION, handler=lambda task: None),
    ],
    ids=lambda value: type(value).__name__,
)
def test_value_types_store_the_plain_string(value: Any) -> None:
    assert type(value.type) is str
    assert value.type == TaskType.SPEECH_RECOGNITION == "speech_recognition"


def test_a_message_of_a_task_type_encodes_as_the_plain_string() -> None:
    # The JSON serializer refuses str subclasses inside a payload (they would arrive as
    # plain str); the type field is converted where it enters, so it is never refused.
    data = JsonSerializer().dumps({"type": Message(type=TaskType.RECORDING).type})
    assert json.loads(data) == {"type": "recording"}


def test_other_str_subclasses_are_stored_plain_and_non_strings_still_refused() -> None:
    class Name(str):
        pass

    assert type(Message(type=Name("x")).type) is str
    with pytest.raises(meetq.ValidationError, match="type=5"):
        Message(type=5)  # type: ignore[arg-type]


async def test_task_types_work_through_every_component_on_memory() -> None:
    qm = await meetq.initialize_queue_system(MEMORY)
    mq, bus, scheduler = qm.get_message_queue(), qm.get_event_bus(), qm.get_task_scheduler()
    dispatcher = qm.get_task_dispatcher()
    assert mq is not None and bus is not None and scheduler is not None
    assert dispatcher is not None
    loop = asyncio.get_running_loop()
    consumed: asyncio.Future[Message] = loop.create_future()
    emitted: asyncio.Future[LocalEvent] = loop.create_future()
    scheduled: asyncio.Future[str] = loop.create_future()

    @mq.handler(TaskType.SPEECH_RECOGNITION)
    async def recognise(msg: Message) -> None:
        consumed.set_result(msg)

    @dispatcher.task(TaskType.TEXT_TO_SPEECH)
    async def speak(task: ReceivedTask) -> str:
        return f"said {task.payload['text']}"

    async def on_stream(event: LocalEvent) -> None:
        emitted.set_result(event)

    async def record(task: Task) -> None:
        scheduled.set_result(task.type)

    bus.on(TaskType.STREAM_CONTROL, on_stream)
    async with qm:
        await mq.publish(Message(type=TaskType.SPEECH_RECOGNITION, payload={"audio": "a"}))
        bus.emit(TaskType.STREAM_CONTROL, {"stream_id": "s1"})
        scheduler.submit_task(Task(type=TaskType.RECORDING, handler=record))
        sent = await dispatcher.dispatch_task(
            TaskRequest(type=TaskType.TEXT_TO_SPEECH, payload={"text": "hi"})
        )
        done = await dispatcher.wait(sent.task_id, timeout=10)
        message = await asyncio.wait_for(consumed, 10)
        event = await asyncio.wait_for(emitted, 10)
        recorded = await asyncio.wait_for(scheduled, 10)
    assert (type(message.type), message.type) == (str, "speech_recognition")
    assert all(type(name) is str for name in mq.handled_types)
    assert message.payload == {"audio": "a"}
    assert event.type == "stream_control" and event.payload == {"stream_id": "s1"}
    assert (type(recorded), recorded) == (str, "recording")
    assert (done.status, done.result) == (meetq.DispatchStatus.COMPLETED, "said hi")
    assert (type(done.type), done.type) == (str, "text_to_speech")


async def test_every_emitted_event_of_a_task_type_carries_the_plain_string() -> None:
    # The bus builds events of a type it has seen without the constructor: that path
    # must store the plain string too.
    bus = meetq.LocalEventBus(buffer_size=10, workers=1)
    seen: list[LocalEvent] = []
    all_in = asyncio.Event()

    async def record(event: LocalEvent) -> None:
        seen.append(event)
        if len(seen) == 3:
            all_in.set()

    bus.on(TaskType.SIGNALING, record)
    async with bus:
        bus.emit(TaskType.SIGNALING, {"n": 1})
        bus.emit("signaling", {"n": 2})
        bus.emit(TaskType.SIGNALING, {"n": 3})
        await asyncio.wait_for(all_in.wait(), 10)
    assert [(type(e.type), e.type, e.payload["n"]) for e in seen] == [
        (str, "signaling", 1),
        (str, "signaling", 2),
        (str, "signaling", 3),
    ]
