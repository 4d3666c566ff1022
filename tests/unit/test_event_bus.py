"""Wiring and helpers of the event bus and PubSub that need no backend binding."""

from __future__ import annotations

import pytest

from meetq import LocalEventBus, PubSub, initialize_queue_system
from meetq.backends.memory._pubsub import glob_to_regex


async def test_manager_builds_pubsub_and_bus_from_event_bus_config() -> None:
    qm = await initialize_queue_system(
        {
            "message_queue": {"enabled": False},
            "task_dispatcher": {"enabled": False},
            "task_scheduler": {"enabled": False},
            "event_bus": {"type": "memory", "buffer_size": 12, "workers": 2, "overflow": "drop"},
        }
    )
    async with qm:
        bus, ps = qm.get_event_bus(), qm.get_pubsub()
        assert isinstance(bus, LocalEventBus) and isinstance(ps, PubSub)
        assert bus.stats()["buffer_size"] == 12 and bus.stats()["workers"] == 2
        await bus.emit_sync("x", {}, wait_handled=True)
        # ... and the manager's own service_started, emitted by start() on the same bus.
        assert bus.stats()["processed_events"] == 2
        stats = await qm.stats()
        assert set(stats) == {"pubsub", "event_bus"}


async def test_disabled_event_bus_builds_nothing() -> None:
    qm = await initialize_queue_system(
        {
            "message_queue": {"enabled": False},
            "event_bus": {"enabled": False},
            "task_dispatcher": {"enabled": False},
        }
    )
    async with qm:
        assert qm.get_pubsub() is None and qm.get_event_bus() is None


@pytest.mark.parametrize(
    ("pattern", "channel", "matches"),
    [
        ("meeting.*", "meeting.started", True),
        ("meeting.*", "meeting.", True),
        ("meeting.*", "meetings.x", False),
        ("h?llo", "hello", True),
        ("h?llo", "hllo", False),
        ("h[ae]llo", "hallo", True),
        ("h[^e]llo", "hello", False),
        ("h[a-c]llo", "hbllo", True),
        ("a\\*b", "a*b", True),
        ("a\\*b", "axb", False),
        ("ns:*", "ns:x:y", True),
    ],
)
def test_memory_glob_matches_like_redis(pattern: str, channel: str, matches: bool) -> None:
    assert bool(glob_to_regex(pattern).fullmatch(channel.encode())) is matches
