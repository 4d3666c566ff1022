"""Contract tests for a message by id: ``status``, ``result``, ``cancel`` and progress.

They need the ``tracking`` capability (``requires(CAP_TRACKING)``), except the one that
checks the clear error a queue raises on a backend without it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

import meetq
from meetq import (
    DispatchStatus,
    MessageQueue,
    ReceivedTask,
    TaskDispatcher,
    TaskRequest,
    TaskResponse,
)
from meetq.core.errors import ResultError, TrackingUnsupported, ValidationError
from meetq.core.protocols import CAP_LIMITS, CAP_TRACKING, Backend
from meetq.core.types import Message, Priority
from meetq.queue import _tracking
from meetq.testing._base import BackendContract
from meetq.testing._helpers import QUICK, TIMEOUT, eventually
from meetq.testing._marks import requires
from meetq.testing._recording import RecordingBackend

__all__ = ["TrackingContract"]

MakeQueue = Callable[..., MessageQueue]


class _Gate:
    """A handler that records each call and holds it until released (per message id)."""

    def __init__(self) -> None:
        self.calls: list[Message] = []
        self.started: dict[str, asyncio.Event] = {}
        self.release: dict[str, asyncio.Event] = {}
        self.cancelled: list[str] = []

    def _event(self, table: dict[str, asyncio.Event], key: str) -> asyncio.Event:
        return table.setdefault(key, asyncio.Event())

    async def __call__(self, message: Message) -> Any:
        self.calls.append(message)
        self._event(self.started, message.id).set()
        try:
            await self._event(self.release, message.id).wait()
        except asyncio.CancelledError:
            self.cancelled.append(message.id)
            raise
        if message.payload.get("fail"):
            raise RuntimeError(f"failing as asked ({message.payload['fail']})")
        return {"echo": message.payload.get("n")}

    async def wait_started(self, message_id: str) -> None:
        await asyncio.wait_for(self._event(self.started, message_id).wait(), TIMEOUT)

    def let_go(self, message_id: str) -> None:
        self._event(self.release, message_id).set()


class TrackingContract(BackendContract):
    """Status, result, cancel and progress by id, on every backend declaring tracking."""

    @pytest_asyncio.fixture
    async def tracked(self, backend: Backend) -> AsyncIterator[Callable[..., MessageQueue]]:
        made: list[MessageQueue] = []

        def make(*, via: Backend | None = None, **overrides: Any) -> MessageQueue:
            mq = MessageQueue(via or backend, **{**QUICK, "queue_name": "tq", **overrides})
            made.append(mq)
            return mq

        yield make
        for mq in made:
            await mq.stop(grace=0)

    # -- status ------------------------------------------------------------------------

    @requires(CAP_TRACKING)
    async def test_status_of_waiting_delayed_and_unknown(self, tracked: MakeQueue) -> None:
        mq = tracked()
        sent = Message(type="t", priority=Priority.HIGH)
        waiting = await mq.publish(sent)
        delayed = await mq.publish(Message(type="t"), delay=60)
        status = await mq.status(waiting)
        assert (status.id, status.state, status.type, status.priority) == (
            waiting,
            "waiting",
            "t",
            Priority.HIGH,
        )
        assert status.attempt == 0 and status.worker == "" and status.started_at is None
        assert status.published_at == pytest.approx(sent.timestamp)
        assert status.available_at is not None
        later = await mq.status(delayed)
        assert later.state == "delayed"
        assert later.available_at is not None and status.available_at is not None
        assert later.available_at >= status.available_at + 50
        assert (await mq.status("no-such-id")).state == "unknown"
        with pytest.raises(ValidationError) as info:
            await mq.status("")
        assert info.value.field == "message_id"

    @requires(CAP_TRACKING)
    async def test_status_running_names_worker_attempt_and_start(self, tracked: MakeQueue) -> None:
        mq = tracked(worker_name="w-one")
        gate = _Gate()
        mq.register_handler("t", gate)
        message_id = await mq.publish(Message(type="t"))
        async with mq:
            await gate.wait_started(message_id)
            status = await mq.status(message_id)
            assert (status.state, status.attempt, status.worker) == ("running", 1, "w-one")
            assert status.started_at is not None and status.published_at is not None
            assert status.started_at >= status.published_at - 1.0  # clocks of one host
            gate.let_go(message_id)
            await eventually(lambda: _processed(mq, 1))

    @requires(CAP_TRACKING)
    async def test_status_retrying_keeps_last_error_then_dead(self, tracked: MakeQueue) -> None:
        mq = tracked(max_retries=1, retry_backoff_base="30s", retry_backoff_max="30s")
        gate = _Gate()
        mq.register_handler("t", gate)
        message_id = await mq.publish(Message(type="t", payload={"fail": "first"}))
        gate.let_go(message_id)
        async with mq:
            await eventually(lambda: len(gate.calls) == 1)

            async def retrying() -> bool:
                return (await mq.status(message_id)).state == "retrying"

            await eventually(retrying)
            status = await mq.status(message_id)
            assert status.attempt == 1
            assert "failing as asked (first)" in status.error
        # The second (last) attempt fails too: dead, with its error.
        fast = tracked(queue_name="tq2", max_retries=0)
        fast.register_handler("t", gate)
        dead_id = await fast.publish(Message(type="t", payload={"fail": "last"}))
        gate.let_go(dead_id)
        async with fast:

            async def dead() -> bool:
                return (await fast.status(dead_id)).state == "dead"

            await eventually(dead)
        status = await fast.status(dead_id)
        assert status.attempt == 1 and "failing as asked (last)" in status.error
        assert status.finished_at is not None and status.type == "t"

    @requires(CAP_TRACKING)
    async def test_done_is_kept_with_result_ttl_and_unknown_without(
        self, tracked: MakeQueue
    ) -> None:
        kept = tracked(result_ttl="60s", worker_name="w-done")
        kept.register_handler("t", _echo)
        plain = tracked(queue_name="tq-plain")
        plain.register_handler("t", _echo)
        a = await kept.publish(Message(type="t", payload={"n": 1}))
        b = await plain.publish(Message(type="t", payload={"n": 2}))
        async with kept, plain:
            assert await kept.result(a, timeout=TIMEOUT) == {"echo": 1}
            await eventually(lambda: _processed(plain, 1))
            done = await kept.status(a)
            assert (done.state, done.worker, done.attempt) == ("done", "w-done", 1)
            assert done.finished_at is not None and done.started_at is not None
            assert (await plain.status(b)).state == "unknown"

    # -- result ------------------------------------------------------------------------

    @requires(CAP_TRACKING)
    async def test_result_waits_by_push(
        self, tracked: MakeQueue, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # No re-read while it waits: only the backend's push can end the wait in time.
        monkeypatch.setattr(_tracking, "_RECHECK", 3600.0)
        mq = tracked(result_ttl="60s")
        gate = _Gate()
        mq.register_handler("t", gate)
        message_id = await mq.publish(Message(type="t", payload={"n": 7}))
        async with mq:
            waiter = asyncio.ensure_future(mq.result(message_id, timeout=None))
            await gate.wait_started(message_id)
            assert not waiter.done()
            gate.let_go(message_id)
            assert await asyncio.wait_for(waiter, TIMEOUT) == {"echo": 7}
            # A second call finds the kept record at once.
            assert await mq.result(message_id, timeout=0) == {"echo": 7}

    @requires(CAP_TRACKING)
    async def test_result_errors_say_why(
        self, tracked: MakeQueue, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        off = tracked(queue_name="tq-off")
        some = await off.publish(Message(type="t"))
        with pytest.raises(ResultError) as info:
            await off.result(some, timeout=1)
        assert info.value.state == "off" and "result_ttl" in str(info.value)

        monkeypatch.setattr(_tracking, "_RECHECK", 3600.0)
        mq = tracked(result_ttl="60s", max_retries=0)
        gate = _Gate()
        mq.register_handler("t", gate)
        with pytest.raises(ResultError) as info:
            await mq.result("never-published", timeout=1)
        assert info.value.state == "unknown"
        failing = await mq.publish(Message(type="t", payload={"fail": "boom"}))
        held = await mq.publish(Message(type="t"))
        with pytest.raises(ResultError) as info:
            await mq.result(held, timeout=0.05)
        assert info.value.state == "waiting" and "not finished within" in str(info.value)
        async with mq:
            dead_wait = asyncio.ensure_future(mq.result(failing, timeout=None))
            await gate.wait_started(failing)
            gate.let_go(failing)
            with pytest.raises(ResultError) as info:
                await asyncio.wait_for(dead_wait, TIMEOUT)
            assert info.value.state == "dead" and "boom" in info.value.error
            await gate.wait_started(held)
            cancelled_wait = asyncio.ensure_future(mq.result(held, timeout=None))
            assert await mq.cancel(held)
            with pytest.raises(ResultError) as info:
                await asyncio.wait_for(cancelled_wait, TIMEOUT)
            assert info.value.state == "cancelled"

    # -- cancel ------------------------------------------------------------------------

    @requires(CAP_TRACKING)
    async def test_cancel_waiting_and_delayed_never_run(self, tracked: MakeQueue) -> None:
        mq = tracked()
        gate = _Gate()
        mq.register_handler("t", gate)
        waiting = await mq.publish(Message(type="t"))
        delayed = await mq.publish(Message(type="t"), delay=0.2)
        assert await mq.cancel(waiting) is True
        assert await mq.cancel(delayed) is True
        assert await mq.cancel(waiting) is False  # twice: the second finds nothing
        assert (await mq.status(waiting)).state == "cancelled"
        assert (await mq.status(delayed)).state == "cancelled"
        assert await mq.queue_length() == 0
        marker = await mq.publish(Message(type="t", priority=Priority.LOW))
        gate.let_go(marker)
        async with mq:
            await gate.wait_started(marker)
            await eventually(lambda: _processed(mq, 1))
        assert [m.id for m in gate.calls] == [marker]
        assert (await mq.stats())["total_cancelled"] == 2

    @requires(CAP_TRACKING)
    async def test_cancel_running_stops_the_handler_and_is_not_retried(
        self, tracked: MakeQueue
    ) -> None:
        mq = tracked(max_retries=3)
        gate = _Gate()
        mq.register_handler("t", gate)
        message_id = await mq.publish(Message(type="t"))
        async with mq:
            await gate.wait_started(message_id)
            assert await mq.cancel(message_id) is True
            await eventually(lambda: gate.cancelled == [message_id])
            status = await mq.status(message_id)
            assert status.state == "cancelled" and status.attempt == 1
            # Nothing comes back: a marker published after it is the next call.
            marker = await mq.publish(Message(type="t"))
            gate.let_go(marker)
            await gate.wait_started(marker)
            await eventually(lambda: _processed(mq, 1))
            assert [m.id for m in gate.calls] == [message_id, marker]
            stats = await mq.stats()
            assert stats["total_cancelled"] == 1 and stats["processing_count"] == 0
            assert stats["cancelled_here"] == 1 and stats["lease_lost"] == 0
            assert stats["total_retried"] == 0 and stats["total_failed"] == 0
        assert await mq.cancel(message_id) is False

    @requires(CAP_TRACKING, CAP_LIMITS)
    async def test_cancel_running_frees_its_concurrency_slot(self, tracked: MakeQueue) -> None:
        mq = tracked(concurrency_limits={"t": 1})
        gate = _Gate()
        mq.register_handler("t", gate)
        first = await mq.publish(Message(type="t"))
        second = await mq.publish(Message(type="t"))
        async with mq:
            await gate.wait_started(first)
            assert await mq.cancel(first) is True
            # The one slot of type t is free again: the second message runs.
            await gate.wait_started(second)
            gate.let_go(second)
            await eventually(lambda: _processed(mq, 1))

    @requires(CAP_TRACKING)
    async def test_cancel_unknown_and_finished_return_false(self, tracked: MakeQueue) -> None:
        mq = tracked(result_ttl="60s", max_retries=0)
        gate = _Gate()
        mq.register_handler("t", gate)
        assert await mq.cancel("not-a-message") is False
        done = await mq.publish(Message(type="t"))
        dead = await mq.publish(Message(type="t", payload={"fail": "x"}))
        gate.let_go(done)
        gate.let_go(dead)
        async with mq:
            await mq.result(done, timeout=TIMEOUT)

            async def is_dead() -> bool:
                return (await mq.status(dead)).state == "dead"

            await eventually(is_dead)
        assert await mq.cancel(done) is False
        assert await mq.cancel(dead) is False
        assert (await mq.status(done)).state == "done"
        assert (await mq.stats())["total_cancelled"] == 0

    @requires(CAP_TRACKING)
    async def test_cancel_racing_the_handler_finishing_is_consistent(
        self, tracked: MakeQueue
    ) -> None:
        mq = tracked(result_ttl="60s")
        gate = _Gate()
        mq.register_handler("t", gate)
        ids = [await mq.publish(Message(type="t", payload={"n": i})) for i in range(6)]
        async with mq:
            for message_id in ids:
                await gate.wait_started(message_id)
            outcomes = []
            for message_id in ids:
                # Both at once: the handler returns while the cancel is on its way.
                gate.let_go(message_id)
                outcomes.append(await mq.cancel(message_id))
            for message_id, cancelled in zip(ids, outcomes, strict=True):

                async def final(message_id: str = message_id) -> bool:
                    return (await mq.status(message_id)).state in ("done", "cancelled")

                await eventually(final)
                state = (await mq.status(message_id)).state
                assert state == ("cancelled" if cancelled else "done"), (message_id, cancelled)
            stats = await mq.stats()
            assert stats["total_cancelled"] == sum(outcomes)
            assert stats["total_processed"] == len(ids) - sum(outcomes)
            # A refused ack is counted as a lost lease only when the cancel notice
            # reaches the worker after the refusal (message-queue.md, Cancel).
            assert stats["processing_count"] == 0
            assert stats["lease_lost"] <= stats["total_cancelled"]

    # -- progress ----------------------------------------------------------------------

    @requires(CAP_TRACKING)
    async def test_progress_is_visible_in_status(self, tracked: MakeQueue) -> None:
        mq = tracked()
        release = asyncio.Event()
        seen: list[meetq.DeliveryContext] = []

        @mq.handler("t")
        async def work(message: Message) -> None:
            delivery = meetq.current_delivery()
            seen.append(delivery)
            for step in range(1, 5):  # coalesced: the last report wins
                delivery.progress(step / 4, {"step": step})
            with pytest.raises(ValidationError) as info:
                delivery.progress(1.5)
            assert info.value.field == "fraction"
            with pytest.raises(ValidationError) as info:
                delivery.progress(0.5, {"bad": object()})
            assert info.value.field == "info"
            await release.wait()

        @mq.handler("s")
        def plain(message: Message) -> None:  # a plain handler, in its thread
            meetq.current_delivery().progress(0.25, "in a thread")
            release_plain.wait(TIMEOUT)

        release_plain = threading.Event()
        a = await mq.publish(Message(type="t"))
        b = await mq.publish(Message(type="s"))
        async with mq:

            async def reported(message_id: str, fraction: float) -> bool:
                return (await mq.status(message_id)).progress == fraction

            await eventually(lambda: reported(a, 1.0))
            await eventually(lambda: reported(b, 0.25))
            assert (await mq.status(a)).progress_info == {"step": 4}
            assert (await mq.status(b)).progress_info == "in a thread"
            assert seen[0].message_id == a and seen[0].attempt == 1
            release.set()
            release_plain.set()
        with pytest.raises(meetq.MeetqError):
            meetq.current_delivery()

    # -- the dispatcher on top -----------------------------------------------------------

    @requires(CAP_TRACKING)
    async def test_dispatched_task_status_result_and_cancel_from_any_process(
        self, backend: Backend
    ) -> None:
        # Three "processes" on one backend and queue: a service, the client that
        # dispatches, and an observer that never saw the dispatch.
        def dispatcher(service: str | None) -> TaskDispatcher:
            mq = MessageQueue(backend, **{**QUICK, "queue_name": "tdq", "result_ttl": "60s"})
            return TaskDispatcher(mq, service_name=service)

        service, client, observer = dispatcher("asr"), dispatcher("gateway"), dispatcher(None)
        client.register_route("speech_recognition", "asr")
        hold = asyncio.Event()
        runs: list[str] = []
        stopped: list[str] = []

        @service.task("speech_recognition")
        async def recognize(task: ReceivedTask) -> dict[str, Any]:
            runs.append(task.id)
            if task.payload.get("hold"):
                try:
                    await hold.wait()
                except asyncio.CancelledError:
                    stopped.append(task.id)
                    raise
            return {"text": f"heard {task.payload.get('audio')}"}

        parts = (service, client, observer)
        try:
            for part in parts:
                await part.message_queue.start()
                await part.start()
            done = await client.dispatch_task(
                TaskRequest(type="speech_recognition", payload={"audio": "a.wav"})
            )
            assert await observer.task_result(done.task_id, timeout=TIMEOUT) == {
                "text": "heard a.wav"
            }
            assert (await observer.task_status(done.task_id)).state == "done"
            assert await observer.cancel_task(done.task_id) is False  # finished

            held = await client.dispatch_task(
                TaskRequest(type="speech_recognition", payload={"hold": True}, max_retries=3)
            )
            await eventually(lambda: held.task_id in runs)

            async def running() -> bool:
                return (await observer.task_status(held.task_id)).state == "running"

            await eventually(running)
            assert await observer.cancel_task(held.task_id) is True
            await eventually(lambda: stopped == [held.task_id])
            final = await client.wait(held.task_id, timeout=TIMEOUT)
            assert final.status is DispatchStatus.CANCELLED
            assert (await observer.task_status(held.task_id)).state == "cancelled"
            with pytest.raises(ResultError) as info:
                await observer.task_result(held.task_id, timeout=TIMEOUT)
            assert info.value.state == "cancelled"
            assert runs.count(held.task_id) == 1  # not retried
        finally:
            for part in parts:
                await part.stop()
                await part.message_queue.stop(grace=0)

    @requires(CAP_TRACKING)
    async def test_cancel_task_in_the_dispatching_process_ends_its_record(
        self, backend: Backend
    ) -> None:
        mq = MessageQueue(backend, **{**QUICK, "queue_name": "tdq2"})
        client = TaskDispatcher(mq, service_name="gateway")
        client.register_route("speech_recognition", "asr")  # nobody serves it here
        seen: list[TaskResponse] = []
        try:
            await mq.start()
            await client.start()
            waiting = await client.dispatch_task(
                TaskRequest(type="speech_recognition", callback=seen.append)
            )
            assert await client.cancel_task(waiting.task_id) is True
            final = await client.wait(waiting.task_id, timeout=TIMEOUT)
            assert final.status is DispatchStatus.CANCELLED
            await eventually(lambda: len(seen) == 1)
            assert await client.cancel_task(waiting.task_id) is False
            assert await mq.queue_length() == 0
        finally:
            await client.stop()
            await mq.stop(grace=0)

    # -- without the capability --------------------------------------------------------

    async def test_a_backend_without_tracking_says_so(self, backend: Backend) -> None:
        hidden = RecordingBackend(backend)
        hidden.capabilities = frozenset(hidden.capabilities - {CAP_TRACKING})
        mq = MessageQueue(hidden, **{**QUICK, "queue_name": "tq-none"})
        for call in (mq.status("x"), mq.cancel("x"), mq.result("x", timeout=0)):
            with pytest.raises(TrackingUnsupported) as info:
                await call
            assert "tracking" in str(info.value) and info.value.backend == backend.name


async def _echo(message: Message) -> Any:
    return {"echo": message.payload.get("n")}


async def _processed(mq: MessageQueue, n: int) -> bool:
    return int((await mq.stats())["total_processed"]) >= n
