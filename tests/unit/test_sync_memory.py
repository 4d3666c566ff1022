"""The sync producer on ``type: memory``: which loop it hands calls to, and its bounds.

The cross-backend behaviour (a sync publish consumed by an async worker, and the
reverse for inspection) is in tests/contract/test_sync_producer.py; this file covers
what only the in-process broker has: no loop holding it, the holding loop's own
thread, a blocked loop, two loops holding one name.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from meetq import BackendUnavailableError, Message, QueueManager, initialize_queue_system
from meetq.sync import SyncProducer


def _config(broker: str, **memory: Any) -> dict[str, Any]:
    return {
        "memory": {"broker": broker, **memory},
        "message_queue": {"type": "memory", "queue_name": "jobs"},
        "event_bus": {"type": "memory"},
        "task_dispatcher": {"enabled": False},
    }


class LoopThread:
    """An event loop on a thread of its own, holding a manager on ``broker``."""

    def __init__(self, broker: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.qm: QueueManager = self.run(initialize_queue_system(_config(broker)))

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.run(self.qm.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def holder(meetq_namespace: str) -> Iterator[LoopThread]:
    loop = LoopThread(meetq_namespace)
    yield loop
    loop.close()


def test_a_program_without_a_loop_gets_one_and_is_warned(
    meetq_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = threading.active_count()
    with (
        caplog.at_level(logging.WARNING, "meetq.memory.sync"),
        SyncProducer(_config(meetq_namespace)) as producer,
    ):
        message_id = producer.publish(Message(type="job"))
        producer.publish_batch([Message(type="job"), Message(type="job")])
        stats = producer.stats()
        assert stats["queue_length"]["total"] == 3 and stats["total_published"] == 3
        assert producer.dead_letter_count() == 0
        assert producer.requeue_dead_letters() == 0
        assert isinstance(message_id, str)
    assert "no running event loop holds memory broker" in caplog.text
    assert threading.active_count() == before  # close() ended the broker's thread


def test_calls_reach_the_loop_holding_the_broker(holder: LoopThread, meetq_namespace: str) -> None:
    with SyncProducer(_config(meetq_namespace)) as producer:
        producer.publish(Message(type="job"))
        mq = holder.qm.get_message_queue()
        assert mq is not None
        assert holder.run(mq.queue_length()) == 1


def test_a_blocked_loop_fails_the_call_within_its_bound(
    holder: LoopThread, meetq_namespace: str
) -> None:
    with SyncProducer(_config(meetq_namespace, sync_call_timeout="200ms")) as producer:
        producer.publish(Message(type="job"))  # attached
        unblock = threading.Event()
        holder.loop.call_soon_threadsafe(unblock.wait, 10)  # the loop's thread is stuck
        try:
            start = time.monotonic()
            with pytest.raises(BackendUnavailableError, match=r"memory.sync_call_timeout"):
                producer.publish(Message(type="job"))
            assert time.monotonic() - start < 3.0
        finally:
            unblock.set()
        producer.publish(Message(type="job"))  # the loop runs again: so do the calls


def test_two_loops_holding_one_broker_name_are_refused(
    holder: LoopThread, meetq_namespace: str
) -> None:
    second = LoopThread(meetq_namespace)
    try:
        with (
            SyncProducer(_config(meetq_namespace)) as producer,
            pytest.raises(BackendUnavailableError, match=r"2 running event loops.*broker"),
        ):
            producer.publish(Message(type="job"))
    finally:
        second.close()


async def test_a_call_from_the_holding_loop_itself_is_refused(meetq_namespace: str) -> None:
    qm = await initialize_queue_system(_config(meetq_namespace))
    try:
        with SyncProducer(_config(meetq_namespace)) as producer:
            with pytest.raises(BackendUnavailableError, match="would wait on itself"):
                producer.publish(Message(type="job"))
            # From a thread it works, and the async side sees it.
            await asyncio.to_thread(producer.publish, Message(type="job"))
            mq = qm.get_message_queue()
            assert mq is not None and await mq.queue_length() == 1
    finally:
        await qm.stop()
