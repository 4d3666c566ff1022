"""Contract tests for the backend object itself: its declared capabilities, and what they
promise.

A capability is declared once, in the backend's ``BackendSpec`` (names from
``meetq.backend.CAPABILITIES``); the tests for what it promises carry
``@requires(...)`` and are skipped, naming the capability, where it is not declared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from meetq import MessageQueue, PubSub
from meetq.core.config import MeetqConfig
from meetq.core.protocols import CAP_CROSS_PROCESS, CAP_DURABLE, Backend
from meetq.core.registry import BackendSpec
from meetq.core.types import Message, PubSubMessage
from meetq.testing._base import BackendContract
from meetq.testing._helpers import QUICK, TIMEOUT, eventually
from meetq.testing._marks import requires
from meetq.testing._recording import RecordingBackend

__all__ = ["BackendObjectContract"]

MakeBackend = Callable[..., Backend]


class BackendObjectContract(BackendContract):
    """The backend object: capabilities as declared, durability, sharing, wrapping."""

    async def test_backend_reports_the_capabilities_its_spec_declares(
        self, backend: Backend, backend_spec: BackendSpec
    ) -> None:
        assert backend.capabilities == backend_spec.capabilities

    async def test_a_recording_wrapper_changes_nothing_a_user_sees(
        self, backend: Backend, contract_queue_name: str
    ) -> None:
        # Tests stage failures through RecordingBackend: it must forward every call as is.
        recording = RecordingBackend(backend)
        mq = MessageQueue(recording, **{**QUICK, "queue_name": contract_queue_name})
        seen: list[int] = []

        @mq.handler("job")
        async def job(msg: Message) -> None:
            seen.append(msg.payload["n"])

        ids = await mq.publish_batch([Message(type="job", payload={"n": n}) for n in range(3)])
        async with mq:
            await eventually(lambda: len(seen) == 3)
        assert sorted(seen) == [0, 1, 2] and len(set(ids)) == 3
        assert await mq.queue_length() == 0
        assert recording.count("enqueue") == 1
        assert {call.target for call in recording.calls} == {f"work_queue:{contract_queue_name}"}
        assert recording.work_queues and recording.name == backend.name

    @requires(CAP_DURABLE)
    async def test_stored_messages_outlive_the_backend_object_that_stored_them(
        self, backend: Backend, make_backend: MakeBackend, contract_queue_name: str
    ) -> None:
        first = MessageQueue(backend, **{**QUICK, "queue_name": contract_queue_name})
        ids = await first.publish_batch(
            [Message(type="keep", payload={"n": n}) for n in range(3)]
        )
        await backend.aclose()  # as the publishing process exits

        later = MessageQueue(make_backend(), **{**QUICK, "queue_name": contract_queue_name})
        seen: dict[str, int] = {}

        @later.handler("keep")
        async def keep(msg: Message) -> None:
            seen[msg.id] = msg.payload["n"]

        async with later:
            await eventually(lambda: len(seen) == 3)
        assert seen == dict(zip(ids, range(3), strict=True))

    @requires(CAP_CROSS_PROCESS)
    async def test_two_backend_objects_from_one_config_share_queues_and_channels(
        self,
        backend: Backend,
        pubsub_backend: Backend,
        make_backend: MakeBackend,
        meetq_config: MeetqConfig,
        contract_queue_name: str,
    ) -> None:
        # Two backend objects stand for two processes on one server: each its own
        # connections, nothing shared in Python.
        consumer = MessageQueue(make_backend(), **{**QUICK, "queue_name": contract_queue_name})
        producer = MessageQueue(backend, **{**QUICK, "queue_name": contract_queue_name})
        got: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        @consumer.handler("job")
        async def job(msg: Message) -> None:
            got.set_result(msg)

        listener_backend = make_backend(meetq_config.event_bus.type)
        heard: asyncio.Future[PubSubMessage] = asyncio.get_running_loop().create_future()

        async def on_news(message: PubSubMessage) -> None:
            heard.set_result(message)

        async with (
            consumer,
            PubSub(listener_backend, meetq_config.event_bus) as listener,
            PubSub(pubsub_backend, meetq_config.event_bus) as speaker,
        ):
            sent = await producer.publish(Message(type="job", payload={"x": 1}))
            assert (await asyncio.wait_for(got, TIMEOUT)).id == sent
            await listener.subscribe("news", on_news)
            assert await speaker.publish("news", PubSubMessage(type="n", payload={"y": 2})) == 1
            assert (await asyncio.wait_for(heard, TIMEOUT)).payload == {"y": 2}
