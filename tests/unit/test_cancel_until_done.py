"""cancel_until_done: a helper task that swallows a cancellation still ends."""

from __future__ import annotations

import asyncio

import pytest

from meetq.core._tasks import cancel_until_done


async def _swallows_first_cancel(swallowed: asyncio.Event) -> None:
    # What a driver read racing its own timeout can do: turn the CancelledError into a
    # return, so the loop around it goes on.
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if swallowed.is_set():
                raise
            swallowed.set()


async def test_a_task_that_swallowed_a_cancellation_is_cancelled_again() -> None:
    swallowed = asyncio.Event()
    task = asyncio.create_task(_swallows_first_cancel(swallowed))
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_until_done([task], [task], every=0.01), 5)
    assert swallowed.is_set()
    assert task.cancelled()


async def test_tasks_not_to_cancel_are_waited_for_and_their_errors_retrieved() -> None:
    release = asyncio.Event()

    async def ends_by_itself() -> None:
        await release.wait()
        raise RuntimeError("its own error")

    own = asyncio.create_task(ends_by_itself())
    helper = asyncio.create_task(asyncio.sleep(3600))
    waiting = asyncio.create_task(cancel_until_done([own, helper], [helper], every=0.01))
    await asyncio.sleep(0.05)
    assert not waiting.done() and not own.done()  # own is not cancelled, only awaited
    release.set()
    await asyncio.wait_for(waiting, 5)
    assert helper.cancelled()
    assert isinstance(own.exception(), RuntimeError)


async def test_a_cancelled_caller_cancels_every_task_and_is_cancelled() -> None:
    own = asyncio.create_task(asyncio.sleep(3600))
    waiting = asyncio.create_task(cancel_until_done([own], []))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0)
    assert own.cancelled()
