"""PubSub and LocalEventBus benchmark: one command, one table, each figure next to its bare
reference measured in the same run.

    python bench/bench_pubsub.py [--runs 5]

Starts its own redis-server on a free loopback port. Measured (medians over the runs):

- LocalEventBus emit-to-handler throughput, one async handler (events/s), next to a bare
  ``asyncio.Queue(1000)`` producer/consumer. Target: >= 30% of bare.
- Redis PubSub delivered messages/s, publisher and subscriber in this process, each on
  its own connection, next to bare redis-py (``client.publish`` and a ``PubSub``
  ``get_message`` loop) sending the same encoded bytes: sequential publishing (await
  each) and pipelined (batches of 100). Target: >= 80% of bare. Every run checks zero
  loss (delivered == published). meetq runs with its default config (no socket
  timeout, like the bare client); the bare reader only counts, while meetq decodes and
  validates every event and hands it to the handler's own task.

The per-run column is the range of the ratios of paired runs (bare and meetq back to
back), a hint of how noisy the machine was.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aioredis

from meetq import LocalEventBus, PubSubMessage, QueueFull, initialize_queue_system
from meetq.core.serialization import JsonSerializer, encode_pubsub_message
from meetq.testing._redis_server import RedisServer

BUS_EVENTS = 200_000
SEQUENTIAL = 10_000
BATCHED = 60_000
BATCH = 100
DELIVERY_TIMEOUT = 30.0
PAYLOAD = {"user_id": 123, "meeting_id": 456, "role": "host"}


# -- LocalEventBus --------------------------------------------------------------------


async def bare_queue() -> float:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(1000)
    done = asyncio.Event()
    seen = 0

    async def consume() -> None:
        nonlocal seen
        while True:
            await queue.get()
            seen += 1
            if seen == BUS_EVENTS:
                done.set()
                return

    consumer = asyncio.create_task(consume())
    start = time.perf_counter()
    for i in range(BUS_EVENTS):
        item = {"i": i}
        if queue.full():
            await queue.put(item)
        else:
            queue.put_nowait(item)
    await done.wait()
    elapsed = time.perf_counter() - start
    await consumer
    return BUS_EVENTS / elapsed


async def event_bus() -> float:
    bus = LocalEventBus(1000, 4, overflow="wait")
    done = asyncio.Event()
    seen = 0

    async def handler(event: Any) -> None:
        nonlocal seen
        seen += 1
        if seen == BUS_EVENTS:
            done.set()

    bus.on("tick", handler)
    await bus.start()
    start = time.perf_counter()
    for i in range(BUS_EVENTS):
        try:
            bus.emit("tick", {"i": i})
        except QueueFull:
            await bus.emit_sync("tick", {"i": i})
    await done.wait()
    elapsed = time.perf_counter() - start
    await bus.stop()
    return BUS_EVENTS / elapsed


# -- Redis Pub/Sub ----------------------------------------------------------------------


class Counter:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.done = asyncio.Event()

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.done.set()


async def _deliver(counter: Counter, publish: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await publish()
    # On timeout fall through: the count check below reports the loss.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(counter.done.wait(), DELIVERY_TIMEOUT)
    elapsed = time.perf_counter() - start
    if counter.count != counter.expected:
        raise SystemExit(f"LOSS: delivered {counter.count} of {counter.expected}")
    return counter.expected / elapsed


async def bare_redis(url: str, total: int, batch: int) -> float:
    channel = f"bench:{uuid.uuid4().hex}"
    body = encode_pubsub_message(PubSubMessage(type="evt", payload=PAYLOAD, source="bench"),
                                 JsonSerializer())
    sub_client, pub_client = aioredis.Redis.from_url(url), aioredis.Redis.from_url(url)
    ps = sub_client.pubsub(ignore_subscribe_messages=True)
    await ps.subscribe(channel)
    counter = Counter(total)

    async def read() -> None:
        while True:
            message = await ps.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is not None and message["type"] == "message":
                counter.hit()

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.05)  # let the reader see the subscribe confirmation

    async def publish() -> None:
        if batch == 1:
            for _ in range(total):
                await pub_client.publish(channel, body)
        else:
            for _ in range(total // batch):
                async with pub_client.pipeline(transaction=False) as pipe:
                    for _ in range(batch):
                        pipe.publish(channel, body)
                    await pipe.execute()

    rate = await _deliver(counter, publish)
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    await ps.aclose()
    await sub_client.aclose()
    await pub_client.aclose()
    return rate


async def meetq_redis(url: str, total: int, batch: int) -> float:
    config = {
        "redis": {"url": url},
        "message_queue": {"enabled": False},
        "task_dispatcher": {"enabled": False},
        "event_bus": {"type": "redis_pubsub", "namespace": f"bench{uuid.uuid4().hex[:8]}"},
    }
    # Two managers: subscriber and publisher on their own clients, like two services.
    sub_qm, pub_qm = await initialize_queue_system(config), await initialize_queue_system(config)
    counter = Counter(total)

    async def handler(message: PubSubMessage) -> None:
        counter.hit()

    async with sub_qm, pub_qm:
        sub, pub = sub_qm.get_pubsub(), pub_qm.get_pubsub()
        assert sub is not None and pub is not None
        await sub.subscribe("meeting_events", handler)
        message = PubSubMessage(type="evt", payload=PAYLOAD, source="bench")

        async def publish() -> None:
            if batch == 1:
                for _ in range(total):
                    await pub.publish("meeting_events", message)
            else:
                messages = [message] * batch
                for _ in range(total // batch):
                    await pub.publish_batch("meeting_events", messages)

        rate = await _deliver(counter, publish)
        stats = await sub.stats()
        if stats["dropped"] or stats["total_processed"] != total:
            raise SystemExit(f"LOSS in meetq: {stats}")
    return rate


# -- driver -----------------------------------------------------------------------------


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


async def main(runs: int) -> None:
    # (label, bare median, meetq median, target, per-run ratios of paired runs)
    rows: list[tuple[str, float, float, float, list[float]]] = []
    bare, bus = [], []
    for _ in range(runs):
        bare.append(await bare_queue())
        bus.append(await event_bus())
    rows.append(("LocalEventBus emit->handler (events/s)", _median(bare), _median(bus), 0.30,
                 [b / a for a, b in zip(bare, bus, strict=True)]))

    with RedisServer() as server:
        info = redis.Redis.from_url(server.url).info("server")
        server_version = info["redis_version"]
        for label, total, batch in (
            ("Redis PubSub sequential publish (msgs/s)", SEQUENTIAL, 1),
            (f"Redis PubSub pipelined publish x{BATCH} (msgs/s)", BATCHED, BATCH),
        ):
            bare_rates, ours = [], []
            for _ in range(runs):
                bare_rates.append(await bare_redis(server.url, total, batch))
                ours.append(await meetq_redis(server.url, total, batch))
            rows.append((label, _median(bare_rates), _median(ours), 0.80,
                         [b / a for a, b in zip(bare_rates, ours, strict=True)]))

    print(f"machine: nproc={os.cpu_count()} python={platform.python_version()} "
          f"redis-py={redis.__version__} redis-server={server_version} "
          f"({platform.machine()}, {platform.system()})")
    print(f"command: python bench/bench_pubsub.py --runs {runs}   (medians of {runs} runs; "
          "zero loss checked in every run)")
    print()
    header = (f"| {'measurement':<46} | {'bare':>12} | {'meetq':>12} | {'ratio':>6} | "
              f"{'per-run':>11} | target |")
    print(header)
    print("|" + "-" * 48 + "|" + "-" * 14 + "|" + "-" * 14 + "|" + "-" * 8 + "|" + "-" * 13
          + "|--------|")
    for label, ref, ours_rate, target, ratios in rows:
        ratio = ours_rate / ref
        verdict = "ok" if ratio >= target else "MISS"
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        print(f"| {label:<46} | {ref:>12,.0f} | {ours_rate:>12,.0f} | {ratio:>6.2f} | "
              f"{spread:>11} | >={target:.0%} {verdict} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode != 0:
        sys.exit("redis-server not found on PATH")
    asyncio.run(main(args.runs))
