"""How long a call takes to fail against a frozen Redis, with meetq's default config.

    python bench/bench_frozen.py [--tries 5]

Starts its own redis-server on a free loopback port (never the machine's 6379), warms a
QueueManager (work queue and Pub/Sub on Redis, nothing but the URL configured), then
freezes the server with SIGSTOP — what a hung host or a partition looks like: sockets stay
open, new connections are even accepted, nothing is answered — and times each call until
it raises ``BackendUnavailableError``. The calls of one try run concurrently; every try
after the first finds its connection dropped by the previous failure and opens a new
one, which the frozen server accepts and never greets. Prints median, min and max per call.
The server is resumed and killed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis

import meetq
from meetq import BackendUnavailableError, Message, PubSubMessage
from meetq.testing._redis_server import RedisServer

# A call still blocked after this long counts as unbounded (shown as ">120").
GIVE_UP = 120.0


async def _time_failure(call: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    try:
        async with asyncio.timeout(GIVE_UP):
            await call()
    except BackendUnavailableError:
        return time.perf_counter() - start
    except TimeoutError:
        return float("inf")
    raise AssertionError("the call succeeded against a frozen server")


async def _measure(server: RedisServer, tries: int) -> dict[str, list[float]]:
    namespace = f"benchfrozen{uuid.uuid4().hex[:8]}"
    qm = await meetq.initialize_queue_system(
        {
            "redis": {"url": server.url, "key_prefix": namespace},
            "message_queue": {"type": "redis", "queue_name": namespace},
            "event_bus": {"type": "redis_pubsub", "namespace": namespace},
            "task_dispatcher": {"enabled": False},
        }
    )
    mq, ps = qm.get_message_queue(), qm.get_pubsub()
    assert mq is not None and ps is not None
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "MessageQueue.publish": lambda: mq.publish(Message(type="job")),
        "MessageQueue.publish_batch (10)": lambda: mq.publish_batch(
            [Message(type="job") for _ in range(10)]
        ),
        "MessageQueue.queue_length": lambda: mq.queue_length(),
        "PubSub.publish": lambda: ps.publish("events", PubSubMessage(type="e")),
    }
    figures: dict[str, list[float]] = {name: [] for name in calls}
    try:
        await qm.start()
        for call in calls.values():  # every path warm and connected
            await call()
        server.freeze()
        for _ in range(tries):
            took = await asyncio.gather(*(_time_failure(call) for call in calls.values()))
            for name, seconds in zip(calls, took, strict=True):
                figures[name].append(seconds)
    finally:
        server.thaw()
        await qm.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tries", type=int, default=5)
    args = parser.parse_args()
    defaults = meetq.RedisConfig()
    server = RedisServer()
    server.start()
    try:
        figures = asyncio.run(_measure(server, args.tries))
        version = redis.Redis(port=server.port).info("server")["redis_version"]
    finally:
        server.close()
    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}, "
        f"redis-py {redis.__version__}, redis-server {version}; frozen with SIGSTOP; "
        f"default config (socket_timeout {defaults.socket_timeout:g}s, "
        f"socket_connect_timeout {defaults.socket_connect_timeout:g}s); {args.tries} tries"
    )
    print("| call (fails with BackendUnavailableError) | median (s) | min (s) | max (s) |")
    print("|-------------------------------------------|------------|---------|---------|")
    for name, values in figures.items():
        print(
            f"| {name:<41} | {_show(statistics.median(values)):>10} | {_show(min(values)):>7} "
            f"| {_show(max(values)):>7} |"
        )
    first = {name: values[0] for name, values in figures.items()}
    print(
        "first try (on the warm connection): "
        + ", ".join(f"{name} {_show(seconds)} s" for name, seconds in first.items())
    )
    sys.stdout.flush()


def _show(seconds: float) -> str:
    return f">{GIVE_UP:g}" if seconds == float("inf") else f"{seconds:.2f}"


if __name__ == "__main__":
    main()
