"""Prometheus metrics on real Redis: the endpoint scraped over HTTP and parsed with
prometheus-client's parser; counters match what was processed, gauges match stats()."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import meetq
from meetq import Message, Priority
from meetq.observability import Metrics, serve_metrics
from meetq.testing import eventually


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _get(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_scraped_counters_and_gauges_match_what_happened(
    meetq_redis_url: str, meetq_namespace: str
) -> None:
    config = {
        "redis": {"url": meetq_redis_url, "key_prefix": meetq_namespace},
        "message_queue": {
            "type": "redis",
            "queue_name": "jobs",
            "poll_interval": "50ms",
            "max_retries": 1,
            "retry_backoff_base": "10ms",
            "retry_backoff_max": "10ms",
            "unhandled_timeout": 3600,
        },
        "event_bus": {"enabled": False},
    }
    qm = await meetq.initialize_queue_system(config)
    mq = qm.get_message_queue()
    assert mq is not None
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.instrument(qm)
    handled: list[str] = []

    @mq.handler("ok")
    async def ok(message: Message) -> None:
        handled.append(message.id)

    @mq.handler("bad")
    async def bad(message: Message) -> None:
        handled.append(message.id)
        raise RuntimeError("always")

    await mq.publish_batch([Message(type="ok") for _ in range(4)])
    await mq.publish(Message(type="ok", priority=Priority.HIGH))
    await mq.publish_batch([Message(type="bad") for _ in range(2)])
    # Never handled here: they stay waiting, for the gauges.
    await mq.publish_batch([Message(type="idle", priority=Priority.LOW) for _ in range(3)])
    await mq.publish(Message(type="idle"), delay=3600)

    server = serve_metrics(0, addr="127.0.0.1", registry=registry)
    try:
        async with qm:
            await eventually(lambda: len(handled) == 9, timeout=30)  # 5 ok + 2 x 2 bad
            await eventually(lambda: _settled(mq), timeout=30)
            stats = await mq.stats()
            info = await mq.inspect()
            samples = await asyncio.to_thread(_scrape, server.port)
    finally:
        server.close()

    published = "meetq_messages_published_total"
    assert _get(samples, published, queue="jobs", type="ok", priority="normal") == 4
    assert _get(samples, published, queue="jobs", type="ok", priority="high") == 1
    assert _get(samples, published, queue="jobs", type="bad", priority="normal") == 2
    assert _get(samples, published, queue="jobs", type="idle", priority="low") == 3
    assert _get(samples, published, queue="jobs", type="idle", priority="normal") == 1

    processed = "meetq_messages_processed_total"
    assert _get(samples, processed, queue="jobs", type="ok", outcome="ack") == 5
    assert _get(samples, processed, queue="jobs", type="bad", outcome="retry") == 2
    assert _get(samples, processed, queue="jobs", type="bad", outcome="dead") == 2
    assert stats["total_processed"] == 5 and stats["total_dead_letter"] == 2

    count = "meetq_message_processing_seconds_count"
    assert _get(samples, count, queue="jobs", type="ok") == 5
    assert _get(samples, count, queue="jobs", type="bad") == 4
    wait = "meetq_message_wait_seconds_count"
    assert _get(samples, wait, queue="jobs", priority="normal") == 6  # first attempts only
    assert _get(samples, wait, queue="jobs", priority="high") == 1

    gauge = "meetq_queue_messages"
    assert _get(samples, gauge, queue="jobs", state="waiting", priority="low") == 3
    assert info.waiting["low"] == 3 and info.waiting["normal"] == 1 and info.delayed == 1
    for name in ("critical", "high", "normal", "low"):
        got = _get(samples, gauge, queue="jobs", state="waiting", priority=name)
        assert got == info.waiting[name] == stats["queue_length"][name]
    assert _get(samples, gauge, queue="jobs", state="delayed", priority="") == info.delayed
    assert _get(samples, gauge, queue="jobs", state="dead", priority="") == info.dead == 2
    assert _get(samples, gauge, queue="jobs", state="running", priority="") == info.running == 0
    assert stats["dead_letter_count"] == 2
    # The idle ones wait still: the gauge ages between the inspect() and the scrape.
    oldest = _get(samples, "meetq_queue_oldest_message_age_seconds", queue="jobs")
    assert info.oldest_age is not None and oldest >= info.oldest_age > 0
    assert not any("id" in dict(labels) for _, labels in samples)  # no message ids


async def _settled(mq: meetq.MessageQueue) -> bool:
    stats = await mq.stats()
    return bool(stats["total_processed"] == 5 and stats["total_dead_letter"] == 2)
