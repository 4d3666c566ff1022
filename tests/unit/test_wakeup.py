"""WakeSignal: each waiting task sees every wake-up; none takes another's."""

from __future__ import annotations

import asyncio

from meetq.core._wakeup import WakeSignal


async def test_two_busy_waiters_each_keep_the_wake_up() -> None:
    # With one shared event, the first worker back would consume the wake-up and the
    # second would sleep for its whole timeout although work was ready.
    signal = WakeSignal()
    registered = {name: asyncio.Event() for name in "ab"}
    go = {name: asyncio.Event() for name in "ab"}
    waited: dict[str, float] = {}
    loop = asyncio.get_running_loop()

    async def worker(name: str) -> None:
        await signal.wait(0)  # known to the signal from now on
        registered[name].set()
        await go[name].wait()  # busy elsewhere while the wake-up arrives
        started = loop.time()
        await signal.wait(30)
        waited[name] = loop.time() - started

    tasks = [asyncio.create_task(worker(name)) for name in "ab"]
    await asyncio.gather(*(event.wait() for event in registered.values()))
    signal.set()
    go["a"].set()
    await asyncio.wait_for(tasks[0], 5)
    go["b"].set()
    await asyncio.wait_for(tasks[1], 5)
    assert waited["a"] < 1 and waited["b"] < 1


async def test_a_consumed_wake_up_is_not_seen_twice() -> None:
    signal = WakeSignal()
    await signal.wait(0)
    signal.set()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await signal.wait(30)  # this task's copy of the wake-up
    assert loop.time() - started < 1
    started = loop.time()
    await signal.wait(0.05)
    assert loop.time() - started >= 0.04
    assert not signal.is_set()


async def test_a_fresh_task_inherits_an_unconsumed_wake_up() -> None:
    signal = WakeSignal()
    signal.set()  # nobody waiting yet
    await asyncio.wait_for(asyncio.create_task(signal.wait(30)), 5)
    # Consumed now: the next fresh task waits for real.
    waiter = asyncio.create_task(signal.wait(30))
    await asyncio.sleep(0)
    assert not waiter.done()
    signal.set()
    await asyncio.wait_for(waiter, 5)
