"""One lifecycle on every component: new -> running -> stopped, held by AsyncService.

Once ``qm.start()`` after ``qm.stop()`` returned None and started nothing, while
``MessageQueue.start()`` raised ``ClosedError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

import meetq
from meetq.core._lifecycle import AsyncService, Lifecycle

CONFIG = {
    "message_queue": {"type": "memory"},
    "event_bus": {"type": "memory"},
    "task_scheduler": {"enabled": True},
    "task_dispatcher": {"enabled": True},
}


def _components(qm: meetq.QueueManager) -> dict[str, AsyncService]:
    found: dict[str, AsyncService | None] = {
        "manager": qm,
        "message_queue": qm.get_message_queue(),
        "pubsub": qm.get_pubsub(),
        "event_bus": qm.get_event_bus(),
        "task_scheduler": qm.get_task_scheduler(),
        "task_dispatcher": qm.get_task_dispatcher(),
    }
    assert all(c is not None for c in found.values())
    return {name: c for name, c in found.items() if c is not None}


NAMES = ["manager", "message_queue", "pubsub", "event_bus", "task_scheduler", "task_dispatcher"]


def _pick(name: str) -> Callable[[meetq.QueueManager], AsyncService]:
    return lambda qm: _components(qm)[name]


@pytest.mark.parametrize("name", NAMES)
async def test_start_is_idempotent_and_refused_after_stop(name: str) -> None:
    qm = await meetq.initialize_queue_system(CONFIG)
    mq = qm.get_message_queue()
    assert mq is not None
    mq.register_handler("job", _job)  # so the queue really starts a pool
    component = _pick(name)(qm)
    assert component.lifecycle is Lifecycle.NEW
    await component.start()
    await component.start()
    assert component.lifecycle is Lifecycle.RUNNING
    await component.stop()
    await component.stop()  # twice is harmless
    assert component.lifecycle is Lifecycle.STOPPED
    with pytest.raises(meetq.ClosedError, match="stopped"):
        await component.start()
    await qm.stop()


@pytest.mark.parametrize("name", NAMES)
async def test_stop_before_start_then_start_is_refused(name: str) -> None:
    qm = await meetq.initialize_queue_system(CONFIG)
    component = _pick(name)(qm)
    await component.stop()
    with pytest.raises(meetq.ClosedError):
        await component.start()
    await qm.stop()


async def test_manager_start_after_stop_raises_and_starts_nothing() -> None:
    qm = await meetq.initialize_queue_system(CONFIG)
    async with qm:
        pass
    before = asyncio.all_tasks()
    with pytest.raises(meetq.ClosedError):
        await qm.start()
    assert asyncio.all_tasks() == before
    assert all(c.lifecycle is Lifecycle.STOPPED for c in _components(qm).values())


async def test_concurrent_starts_run_one_start() -> None:
    calls = 0

    class Service(AsyncService):
        async def _start(self) -> None:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0)

        async def stop(self) -> None:
            pass

    service = Service()
    await asyncio.gather(service.start(), service.start(), service.start())
    assert calls == 1 and service.lifecycle is Lifecycle.RUNNING


async def test_a_failed_start_leaves_it_new_and_startable() -> None:
    attempts = 0

    class Service(AsyncService):
        async def _start(self) -> None:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                raise meetq.BackendUnavailableError("down", backend="x")

        async def stop(self) -> None:
            pass

    service = Service()
    with pytest.raises(meetq.BackendUnavailableError):
        await service.start()
    assert service.lifecycle is Lifecycle.NEW
    await service.start()
    assert service.lifecycle is Lifecycle.RUNNING


async def _job(msg: meetq.Message) -> None:
    pass
