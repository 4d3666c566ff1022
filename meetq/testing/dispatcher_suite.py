"""Contract tests for ``TaskDispatcher`` on top of the bound backend's ``MessageQueue``.

Each test builds separate "processes" — a client dispatcher and one or more services,
each on its own ``MessageQueue`` over the shared backend and queue name — and proves
that a task runs in the service its route names and that its status comes back.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
import pytest_asyncio

from meetq import (
    DispatchStatus,
    MessageQueue,
    PubSub,
    ReceivedTask,
    TaskDispatcher,
    TaskRequest,
    TaskResponse,
)
from meetq.core.config import MeetqConfig
from meetq.core.errors import ClosedError, SerializationError, ValidationError
from meetq.core.protocols import Backend
from meetq.core.types import Message, PubSubMessage
from meetq.testing._base import BackendContract
from meetq.testing._helpers import QUICK, eventually

__all__ = ["TaskDispatcherContract"]

MakeDispatcher = Callable[..., TaskDispatcher]
ASR, VIDEO = "speech_recognition", "video_processing"


async def _start(*dispatchers: TaskDispatcher) -> None:
    for dispatcher in dispatchers:
        await dispatcher.message_queue.start()
        await dispatcher.start()


def _client(make: MakeDispatcher, **options: Any) -> TaskDispatcher:
    client = make("gateway", **options)
    client.register_route(ASR, "asr")
    client.register_route(VIDEO, "video")
    return client


class TaskDispatcherContract(BackendContract):
    """The task-dispatcher part of the contract suite."""

    @pytest_asyncio.fixture
    async def make_dispatcher(
        self, backend: Backend, contract_queue_name: str
    ) -> AsyncIterator[MakeDispatcher]:
        """``make(service_name, queue={...}, **options)``: a dispatcher on a fresh
        MessageQueue (QUICK settings, queue ``contract_queue_name``) — one "process" of
        the test."""
        made: list[TaskDispatcher] = []

        def make(
            service_name: str | None = None,
            *,
            queue: Mapping[str, Any] | None = None,
            **options: Any,
        ) -> TaskDispatcher:
            mq = MessageQueue(
                backend, **{**QUICK, "queue_name": contract_queue_name, **(queue or {})}
            )
            dispatcher = TaskDispatcher(mq, service_name=service_name, **options)
            made.append(dispatcher)
            return dispatcher

        yield make
        for dispatcher in made:
            await dispatcher.stop()
            await dispatcher.message_queue.stop(grace=0)

    # -- execution and routing -----------------------------------------------------------

    async def test_dispatcher_runs_the_task_in_the_owning_service(
        self, make_dispatcher: MakeDispatcher
    ) -> None:
        asr, video, client = make_dispatcher("asr"), make_dispatcher("video"), None
        decoy_calls: list[str] = []

        @asr.task(ASR)
        async def recognize(task: ReceivedTask) -> dict[str, Any]:
            return {"text": f"heard {task.payload['audio']}", "by": "asr", "lang": task.metadata}

        @video.task(VIDEO)
        async def transcode(task: ReceivedTask) -> dict[str, Any]:
            return {"frames": len(task.payload["clip"]), "by": "video"}

        @video.task(ASR)  # video can run ASR too, but the route names asr
        async def decoy(task: ReceivedTask) -> None:
            decoy_calls.append(task.id)

        client = _client(make_dispatcher)
        await _start(asr, video, client)
        speech = await client.dispatch_task(
            TaskRequest(type=ASR, payload={"audio": "a.wav"}, metadata={"lang": "zh"})
        )
        clip = await client.dispatch_task(TaskRequest(type=VIDEO, payload={"clip": "xyz"}))
        assert speech.status is DispatchStatus.PENDING and speech.service == "asr"
        assert clip.service == "video"
        done_speech = await client.wait(speech.task_id, timeout=10)
        done_clip = await client.wait(clip.task_id, timeout=10)
        assert done_speech.status is DispatchStatus.COMPLETED
        assert done_speech.result == {"text": "heard a.wav", "by": "asr", "lang": {"lang": "zh"}}
        assert (done_speech.attempts, done_speech.error, done_speech.type) == (1, None, ASR)
        assert done_clip.result == {"frames": 3, "by": "video"}
        assert done_clip.service == "video"
        assert decoy_calls == []
        assert client.get_task_status(speech.task_id) == done_speech
        assert client.get_task_status("no-such-task") is None

    async def test_dispatcher_rejects_a_type_without_route(
        self, make_dispatcher: MakeDispatcher
    ) -> None:
        client = _client(make_dispatcher)
        with pytest.raises(ValidationError) as info:
            await client.dispatch_task(TaskRequest(type="ocr"))
        assert info.value.field == "request.type" and info.value.value == "ocr"
        assert ASR in str(info.value) and VIDEO in str(info.value)
        assert await client.message_queue.queue_length() == 0
        assert client.stats()["total_dispatched"] == 0
        with pytest.raises(ValidationError) as info:
            await client.dispatch_task({"type": ASR})  # type: ignore[arg-type]
        assert info.value.field == "request"

    async def test_dispatcher_without_routing_uses_the_shared_queue(
        self, make_dispatcher: MakeDispatcher
    ) -> None:
        worker = make_dispatcher()
        threads: list[str] = []

        @worker.task("thumbnail")
        def thumbnail(task: ReceivedTask) -> int:  # a plain function runs in a thread
            threads.append(threading.current_thread().name)
            return int(task.payload["w"]) * 2

        client = make_dispatcher(enable_routing=False)
        await _start(worker, client)
        sent = await client.dispatch_task(TaskRequest(type="thumbnail", payload={"w": 21}))
        assert sent.service is None
        done = await client.wait(sent.task_id, timeout=10)
        assert (done.status, done.result) == (DispatchStatus.COMPLETED, 42)
        assert threads and threads[0] != threading.main_thread().name

    async def test_dispatcher_request_and_route_validation_names_the_field(
        self, make_dispatcher: MakeDispatcher
    ) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"type": ""}, "type"),
            ({"type": ASR, "timeout": 0}, "timeout"),
            ({"type": ASR, "max_retries": -1}, "max_retries"),
            ({"type": ASR, "priority": "urgent"}, "priority"),
            ({"type": ASR, "callback": 5}, "callback"),
            ({"type": ASR, "metadata": {"k": 1}}, "metadata['k']"),
        ]
        for kwargs, field in cases:
            with pytest.raises(ValidationError) as info:
                TaskRequest(**kwargs)
            assert info.value.field == field, kwargs
        client = _client(make_dispatcher)
        with pytest.raises(ValidationError) as info:
            client.register_route(ASR, "a@b")
        assert info.value.field == "service"
        with pytest.raises(SerializationError) as info:
            await client.dispatch_task(TaskRequest(type=ASR, payload={"x": object()}))
        assert info.value.field == "request.payload.x"
        assert client.get_task_status(client.stats()["routes"][ASR]) is None
        assert client.stats()["pending"] == 0 and await client.message_queue.queue_length() == 0
        await client.message_queue.start()
        with pytest.raises(ValidationError) as info:
            TaskDispatcher(client.message_queue)
        assert info.value.field == "message_queue"

    # -- failures, retries, timeouts ------------------------------------------------------

    async def test_dispatcher_reports_failed_after_the_last_retry(
        self, make_dispatcher: MakeDispatcher
    ) -> None:
        asr = make_dispatcher("asr")
        attempts: list[int] = []

        @asr.task(ASR)
        async def recognize(task: ReceivedTask) -> None:
            attempts.append(task.attempt)
            raise ValueError("bad audio")

        client = _client(make_dispatcher)
        await _start(asr, client)
        sent = await client.dispatch_task(TaskRequest(type=ASR, max_retries=2))
        done = await client.wait(sent.task_id, timeout=10)
        assert done.status is DispatchStatus.FAILED
        assert done.error == "ValueError: bad audio"
        assert done.attempts == 3 and attempts == [1, 2, 3]
        await eventually(lambda: client.message_queue.dead_letter_count())
        assert client.stats()["total_failed"] == 1

    async def test_dispatcher_handlers_own_timeout_error_is_a_failure(
        self, make_dispatcher: MakeDispatcher
    ) -> None:
        asr = make_dispatcher("asr")

        @asr.task(ASR)
        async def recognize(task: ReceivedTask) -> None:
            raise TimeoutError("model server did not answer")

        client = _client(make_dispatcher)
        await _start(asr, client)
        sent = await client.dispatch_task(TaskRequest(type=ASR, max_retries=0, timeout=30))
        done = await client.wait(sent.task_id, timeout=10)
        assert done.status is DispatchStatus.FAILED
        assert done.error is not None and "model server did not answer" in done.error

    async def test_dispatcher_serve_refused_leaves_no_route(
        self, make_dispatcher: MakeDispatcher
    ) -> None:
        asr = make_dispatcher("asr")
        await _start(asr)
        with pytest.raises(ValidationError):
            asr.serve(ASR, lambda task: None)  # the queue runs: too late to serve
        assert ASR not in asr.routes

    async def test_dispatcher_retries_then_completes(self, make_dispatcher: MakeDispatcher) -> None:
        asr = make_dispatcher("asr")
        seen: list[tuple[int, int]] = []

        @asr.task(ASR)
        async def recognize(task: ReceivedTask) -> str:
            seen.append((task.attempt, task.max_attempts))
            if task.attempt == 1:
                raise ConnectionError("model not loaded")
            return "ok"

        client = _client(make_dispatcher)
        await _start(asr, client)
        sent = await client.dispatch_task(TaskRequest(type=ASR, max_retries=1))
        done = await client.wait(sent.task_id, timeout=10)
        assert (done.status, done.result, done.attempts) == (DispatchStatus.COMPLETED, "ok", 2)
        assert done.error is None
        assert seen == [(1, 2), (2, 2)]

    async def test_dispatcher_handler_timeout_and_unencodable_result_fail_the_task(
        self, make_dispatcher: MakeDispatcher
    ) -> None:
        asr = make_dispatcher("asr")
        never = asyncio.Event()

        @asr.task(ASR)
        async def stuck(task: ReceivedTask) -> None:
            await never.wait()

        @asr.task(VIDEO)
        async def weird(task: ReceivedTask) -> object:
            return object()

        client = make_dispatcher()
        client.register_route(ASR, "asr")
        client.register_route(VIDEO, "asr")
        await _start(asr, client)
        slow = await client.dispatch_task(TaskRequest(type=ASR, timeout=0.1, max_retries=0))
        odd = await client.dispatch_task(TaskRequest(type=VIDEO, max_retries=0))
        done = await client.wait(slow.task_id, timeout=10)
        assert done.status is DispatchStatus.FAILED
        assert done.error is not None and "did not finish within 0.1s" in done.error
        done = await client.wait(odd.task_id, timeout=10)
        assert done.status is DispatchStatus.FAILED
        assert done.error is not None and "not JSON-serializable" in done.error

    async def test_dispatcher_wait_times_out_and_rejects_unknown_ids(
        self, make_dispatcher: MakeDispatcher
    ) -> None:
        client = make_dispatcher()
        client.register_route(ASR, "nobody-runs-this")
        await _start(client)
        sent = await client.dispatch_task(TaskRequest(type=ASR))
        with pytest.raises(TimeoutError):
            await client.wait(sent.task_id, timeout=0.05)
        status = client.get_task_status(sent.task_id)
        assert status is not None and status.status is DispatchStatus.PENDING
        assert client.stats()["pending"] == 1
        with pytest.raises(ValidationError) as info:
            await client.wait("no-such-task", timeout=1)
        assert info.value.field == "task_id"

    async def test_dispatcher_deadline_times_out_and_a_late_result_completes(
        self, make_dispatcher: MakeDispatcher
    ) -> None:
        client = _client(make_dispatcher, deadline_margin=0.05)
        finals: list[TaskResponse] = []
        await _start(client)
        sent = await client.dispatch_task(
            TaskRequest(type=ASR, timeout=0.05, max_retries=0, callback=finals.append)
        )
        done = await client.wait(sent.task_id, timeout=10)
        assert done.status is DispatchStatus.TIMED_OUT
        assert done.error is not None and "no final status" in done.error
        await eventually(lambda: finals)
        assert client.stats()["total_timed_out"] == 1
        # The asr service comes up late; the task still runs and its result is recorded.
        asr = make_dispatcher("asr")
        asr.serve(ASR, lambda task: "late but done")
        await _start(asr)
        await eventually(
            lambda: (s := client.get_task_status(sent.task_id)) and s.result == "late but done"
        )
        status = client.get_task_status(sent.task_id)
        assert status is not None and status.status is DispatchStatus.COMPLETED
        stats = client.stats()
        assert (stats["late_results"], stats["total_completed"]) == (1, 1)
        assert [f.status for f in finals] == [DispatchStatus.TIMED_OUT]  # callback ran once

    # -- callbacks -----------------------------------------------------------------------

    async def test_dispatcher_callbacks_run_once_with_the_final_status(
        self, make_dispatcher: MakeDispatcher
    ) -> None:
        asr = make_dispatcher("asr")
        asr.serve(ASR, lambda task: task.payload["n"])
        # One client worker: result messages are applied in the order they were sent.
        client = _client(make_dispatcher, queue={"workers": 1})
        await _start(asr, client)
        plain: list[TaskResponse] = []
        async_calls: list[TaskResponse] = []
        plain_thread: list[str] = []

        def on_done(response: TaskResponse) -> None:
            plain_thread.append(threading.current_thread().name)
            plain.append(response)

        async def on_done_async(response: TaskResponse) -> None:
            async_calls.append(response)

        async def broken(response: TaskResponse) -> None:
            raise RuntimeError("callback bug")

        first = await client.dispatch_task(
            TaskRequest(type=ASR, payload={"n": 1}, callback=on_done)
        )
        second = await client.dispatch_task(
            TaskRequest(type=ASR, payload={"n": 2}, callback=on_done_async)
        )
        third = await client.dispatch_task(TaskRequest(type=ASR, payload={"n": 3}, callback=broken))
        for sent in (first, second, third):
            await client.wait(sent.task_id, timeout=10)
        await eventually(lambda: plain and async_calls and client.stats()["callbacks_failed"])
        # An at-least-once duplicate of the final report changes nothing.
        await client.message_queue.publish(
            Message(
                type=client.reply_to,
                payload={"task_id": first.task_id, "status": "failed", "attempt": 1},
            )
        )
        fourth = await client.dispatch_task(TaskRequest(type=ASR, payload={"n": 4}))
        await client.wait(fourth.task_id, timeout=10)
        assert [(r.task_id, r.status, r.result) for r in plain] == [
            (first.task_id, DispatchStatus.COMPLETED, 1)
        ]
        assert [(r.task_id, r.result) for r in async_calls] == [(second.task_id, 2)]
        assert plain_thread[0] != threading.main_thread().name
        again = client.get_task_status(first.task_id)
        assert again is not None and again.status is DispatchStatus.COMPLETED
        stats = client.stats()
        assert (stats["callbacks_failed"], stats["total_completed"]) == (1, 4)

    async def test_dispatcher_with_callbacks_disabled_rejects_a_callback(
        self, make_dispatcher: MakeDispatcher
    ) -> None:
        client = _client(make_dispatcher, enable_callbacks=False)
        with pytest.raises(ValidationError) as info:
            await client.dispatch_task(TaskRequest(type=ASR, callback=print))
        assert info.value.field == "request.callback"
        assert await client.message_queue.queue_length() == 0
        sent = await client.dispatch_task(TaskRequest(type=ASR))
        assert sent.status is DispatchStatus.PENDING

    # -- batches -------------------------------------------------------------------------

    async def test_dispatcher_batch_is_all_or_nothing(
        self, make_dispatcher: MakeDispatcher
    ) -> None:
        asr, video = make_dispatcher("asr"), make_dispatcher("video")
        asr.serve(ASR, lambda task: f"asr:{task.payload['i']}")
        video.serve(VIDEO, lambda task: f"video:{task.payload['i']}")
        client = _client(make_dispatcher)
        good = [TaskRequest(type=(ASR, VIDEO)[i % 2], payload={"i": i}) for i in range(4)]
        for bad, field in [
            (TaskRequest(type="ocr"), "requests[4].type"),
            (TaskRequest(type=ASR, payload={"blob": b"x"}), "requests[4].payload.blob"),
            (good[0], "requests"),  # the same id twice
        ]:
            with pytest.raises(ValidationError) as info:
                await client.dispatch_batch([*good, bad])
            assert info.value.field == field
            assert await client.message_queue.queue_length() == 0
            assert client.get_task_status(good[0].id) is None
        assert client.stats()["total_dispatched"] == 0
        sent = await client.dispatch_batch(good)
        assert [r.task_id for r in sent] == [r.id for r in good]
        await _start(asr, video, client)
        results = [(await client.wait(r.task_id, timeout=10)).result for r in sent]
        assert results == ["asr:0", "video:1", "asr:2", "video:3"]
        assert await client.dispatch_batch([]) == []

    # -- observers, stats, lifecycle -----------------------------------------------------

    async def test_dispatcher_broadcasts_status_on_pubsub(
        self, make_dispatcher: MakeDispatcher, pubsub_backend: Backend, meetq_config: MeetqConfig
    ) -> None:
        server_ps = PubSub(pubsub_backend, meetq_config.event_bus)
        observer = PubSub(pubsub_backend, meetq_config.event_bus)
        seen: list[str] = []
        completed = asyncio.Event()

        async def watch(message: PubSubMessage) -> None:
            seen.append(message.payload["status"])
            if message.payload["status"] == "completed":
                completed.set()

        try:
            await observer.subscribe("tasks.status", watch)
            await observer.start()
            await server_ps.start()
            asr = make_dispatcher("asr", pubsub=server_ps)
            asr.serve(ASR, lambda task: "ok")
            client = _client(make_dispatcher)
            await _start(asr, client)
            sent = await client.dispatch_task(TaskRequest(type=ASR))
            await asyncio.wait_for(completed.wait(), 10)
            assert seen == ["running", "completed"]
            assert (await client.wait(sent.task_id, timeout=10)).result == "ok"
        finally:
            await observer.stop()
            await server_ps.stop()

    async def test_dispatcher_stats_count_by_status(self, make_dispatcher: MakeDispatcher) -> None:
        asr = make_dispatcher("asr")
        asr.serve(ASR, lambda task: None)
        client = _client(make_dispatcher)
        await _start(asr, client)
        sent = await client.dispatch_task(TaskRequest(type=ASR))
        await client.wait(sent.task_id, timeout=10)
        stats = client.stats()
        assert {
            "total_dispatched": 1,
            "total_completed": 1,
            "total_failed": 0,
            "total_timed_out": 0,
            "pending": 0,
            "in_progress": 0,
            "routes": {ASR: "asr", VIDEO: "video"},
            "callbacks_failed": 0,
        }.items() <= stats.items()
        assert asr.stats()["served_types"] == [ASR] and asr.stats()["total_served"] == 1

    async def test_dispatcher_stop_cancels_unfinished_tasks_and_is_idempotent(
        self, make_dispatcher: MakeDispatcher
    ) -> None:
        client = _client(make_dispatcher)
        finals: list[TaskResponse] = []
        async with client:
            sent = await client.dispatch_task(TaskRequest(type=ASR, callback=finals.append))
            waiter = asyncio.ensure_future(client.wait(sent.task_id))
            await client.stop()
            await client.stop()
            assert (await waiter).status is DispatchStatus.CANCELLED
        assert [f.status for f in finals] == [DispatchStatus.CANCELLED]
        with pytest.raises(ClosedError):
            await client.dispatch_task(TaskRequest(type=ASR))
        with pytest.raises(ClosedError):
            await client.start()
