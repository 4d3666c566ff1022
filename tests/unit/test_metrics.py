"""meetq.observability.Metrics on memory: PubSub and event-bus counters, the snapshot a
collection on the loop serves, and the error without prometheus-client."""

from __future__ import annotations

import asyncio
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meetq import LocalEventBus, MissingDependencyError, PubSub, PubSubMessage, ValidationError
from meetq.backends.memory._backend import MemoryBackend
from meetq.observability import Metrics
from meetq.testing import eventually


def _values(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {
        s.name + "".join(f"/{v}" for v in s.labels.values()): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


async def test_pubsub_and_event_bus_counters() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    pubsub = PubSub(MemoryBackend(), namespace="m")
    bus = LocalEventBus(workers=1)
    metrics.instrument(pubsub, bus)
    got: list[str] = []
    handled: list[str] = []
    bus.on("e", lambda event: handled.append(event.type))

    async def on_message(message: PubSubMessage) -> None:
        got.append(message.type)

    async with pubsub, bus:
        await pubsub.subscribe("ch", on_message)
        await pubsub.publish("ch", PubSubMessage(type="t"))
        await pubsub.publish("ch", PubSubMessage(type="t"))
        await eventually(lambda: len(got) == 2)
        await bus.emit_sync("e", {}, wait_handled=True)
        before = _values(registry)  # on the loop: the last snapshot (none yet)
        await metrics.refresh()
        after = _values(registry)
    assert "meetq_pubsub_published_total" in before and before["meetq_pubsub_published_total"] == 0
    assert after["meetq_pubsub_published_total"] == 2
    assert after["meetq_pubsub_received_total"] == 2
    assert after["meetq_pubsub_dropped_total"] == 0
    assert after["meetq_pubsub_reconnects_total"] == 0
    # The bus is read live (plain counters): no refresh needed.
    assert before["meetq_event_bus_events_total/accepted"] == 1
    assert before["meetq_event_bus_events_total/processed"] == 1
    assert before["meetq_event_bus_events_total/failed"] == 0
    assert after["meetq_event_bus_pending_events"] == 0


def test_instrument_rejects_other_objects() -> None:
    with pytest.raises(ValidationError, match="expected a QueueManager"):
        Metrics(CollectorRegistry()).instrument(object())


def test_without_prometheus_client_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'meetq\[prometheus\]'"):
        Metrics(CollectorRegistry())


async def test_pubsub_dropped_counter_counts_what_a_full_buffer_dropped() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    pubsub = PubSub(
        MemoryBackend(), namespace="d", subscriber_buffer=1, subscriber_overflow="drop_newest"
    )
    metrics.instrument(pubsub)
    release = asyncio.Event()

    async def stuck(message: PubSubMessage) -> None:
        await release.wait()

    async with pubsub:
        await pubsub.subscribe("ch", stuck)
        for _ in range(3):  # one in the handler, one in the buffer at most: one dropped
            await pubsub.publish("ch", PubSubMessage(type="t"))
        await eventually(lambda: _dropped(pubsub))
        await metrics.refresh()
        scraped = _values(registry)
        stats = await pubsub.stats()
        release.set()
    assert scraped["meetq_pubsub_dropped_total"] == stats["dropped"] >= 1
    assert scraped["meetq_pubsub_published_total"] == 3


async def _dropped(pubsub: PubSub) -> bool:
    return (await pubsub.stats())["dropped"] >= 1
