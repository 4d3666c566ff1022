"""What a handler raises ends that call only, on the in-process components too.

StopIteration from a plain handler once hung the event bus worker and the scheduler's
attempt forever (it cannot cross a Future); SystemExit ended their tasks.
"""

from __future__ import annotations

import asyncio

import pytest

from meetq import (
    DispatchStatus,
    LocalEventBus,
    MessageQueue,
    ReceivedTask,
    Task,
    TaskDispatcher,
    TaskRequest,
    TaskScheduler,
    TaskStatus,
)
from meetq.backends.memory._backend import MemoryBackend
from meetq.core.types import LocalEvent


def _stop(event: LocalEvent) -> None:
    raise StopIteration


def _exit(event: LocalEvent) -> None:
    raise SystemExit(0)


def _genexit(event: LocalEvent) -> None:
    raise GeneratorExit


async def _async_exit(event: LocalEvent) -> None:
    raise SystemExit(0)


async def test_event_bus_plain_stop_iteration_and_exits_are_failures() -> None:
    bus = LocalEventBus(workers=1)
    seen: list[str] = []
    bus.on("stop", _stop)
    bus.on("exit", _exit)
    bus.on("aexit", _async_exit)
    bus.on("genexit", _genexit)
    bus.on("ok", lambda event: seen.append(event.type))
    async with bus:
        for kind in ("stop", "exit", "aexit", "genexit", "ok"):
            await asyncio.wait_for(bus.emit_sync(kind, {}, wait_handled=True), 10)
        stats = bus.stats()
    assert seen == ["ok"]
    assert stats["failed_events"] == 4 and stats["processed_events"] == 1


def _task_stop(task: Task) -> None:
    raise StopIteration


def _task_exit(task: Task) -> None:
    raise SystemExit(0)


@pytest.mark.parametrize("handler", [_task_stop, _task_exit])
async def test_scheduler_plain_stop_iteration_and_exit_fail_the_task(handler: object) -> None:
    async with TaskScheduler(workers=1) as scheduler:
        task = Task(type="t", handler=handler)
        scheduler.submit_task(task)
        snapshot = await scheduler.wait(task.id, timeout=10)
        after = Task(type="t", handler=lambda t: "fine")
        scheduler.submit_task(after)
        assert (await scheduler.wait(after.id, timeout=10)).result == "fine"
    assert snapshot.status is TaskStatus.FAILED
    assert snapshot.error is not None
    assert "StopIteration" in snapshot.error or "SystemExit" in snapshot.error


async def test_dispatcher_plain_task_handler_stop_iteration_fails_the_task() -> None:
    backend = MemoryBackend()
    mq = MessageQueue(backend, queue_name="q", poll_interval="50ms", retry_backoff_base="10ms")
    dispatcher = TaskDispatcher(mq, service_name="asr")
    dispatcher.register_route("speech", "asr")

    @dispatcher.task("speech")
    def recognize(task: ReceivedTask) -> None:
        raise StopIteration

    async with mq, dispatcher:
        sent = await dispatcher.dispatch_task(TaskRequest(type="speech", max_retries=0))
        done = await dispatcher.wait(sent.task_id, timeout=10)
    assert done.status is DispatchStatus.FAILED
    assert done.error == "RuntimeError: handler raised StopIteration"
