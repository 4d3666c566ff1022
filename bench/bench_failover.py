"""Time from a Sentinel master failing to the first message handled again.

    python bench/bench_failover.py [--runs 5] [--defaults]

Starts its own Sentinel setup (meetq.testing.RedisSentinelSetup: a master, two replicas,
three sentinels with ``down-after-milliseconds 1000``) on free loopback ports. Each run
builds a worker (a handler on the work queue, a subscriber to a channel) and a producer
(a work-queue publish and a broadcast every 10 ms, a failed publish retried), each on a
``Sentinel.master_for`` client of its own, as two processes would; once both are busy
it fails the master — SIGKILL (connections reset) or SIGSTOP (a frozen master: nothing
answers) — and times, from that instant:

- ``promoted``: the sentinels name a new master and it answers as one;
- ``published``: the producer's first work-queue publish that returns;
- ``handled``: the worker handles the first message published after the failure;
- ``heard``: the subscriber receives the first broadcast published after the failure.

The setup is healed (the failed node restarted as a replica) between runs. Prints the
median, min and max of each over the runs. The meetq config uses short bounds
(``socket_timeout`` and ``socket_connect_timeout`` 1 s, ``health_check_interval`` 200 ms,
``event_bus.reconnect_backoff_max`` 200 ms) unless ``--defaults`` (5 s bounds and
backoffs, meetq's defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import platform
import statistics
import sys
import time
import uuid
from typing import Any

import redis
from redis.asyncio.sentinel import Sentinel

import meetq
from meetq import BackendUnavailableError, Message, PubSubMessage
from meetq.testing import RedisSentinelSetup
from meetq.testing._redis_sentinel import SERVICE

SHORT = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0, "health_check_interval": 0.2}
DEFAULTS = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0, "health_check_interval": 5.0}
FIGURES = ("promoted", "published", "handled", "heard")
GIVE_UP = 60.0


def _config(namespace: str, defaults: bool) -> dict[str, Any]:
    event_bus: dict[str, Any] = {"type": "redis_pubsub", "namespace": namespace}
    if not defaults:
        event_bus.update(reconnect_backoff_base="20ms", reconnect_backoff_max="200ms")
    return {
        "redis": {"key_prefix": namespace},
        "message_queue": {"type": "redis", "queue_name": namespace},
        "event_bus": event_bus,
        "task_dispatcher": {"enabled": False},
    }


async def _run(setup: RedisSentinelSetup, failure: str, defaults: bool) -> dict[str, float]:
    bounds = DEFAULTS if defaults else SHORT
    namespace = f"benchfo{uuid.uuid4().hex[:8]}"
    sentinels = [Sentinel(setup.sentinel_addresses, socket_timeout=bounds["socket_timeout"])]
    sentinels.append(Sentinel(setup.sentinel_addresses, socket_timeout=bounds["socket_timeout"]))
    clients = [s.master_for(SERVICE, **bounds) for s in sentinels]
    worker = await meetq.initialize_queue_system(_config(namespace, defaults), redis=clients[0])
    producer = await meetq.initialize_queue_system(_config(namespace, defaults), redis=clients[1])
    mq, ps = worker.get_message_queue(), worker.get_pubsub()
    out_mq, out_ps = producer.get_message_queue(), producer.get_pubsub()
    assert mq is not None and ps is not None and out_mq is not None and out_ps is not None
    failed_at = float("inf")
    boundary = {"n": sys.maxsize, "k": sys.maxsize}  # first numbers sent after the failure
    seen: dict[str, float] = {}

    def mark(figure: str) -> None:
        if figure not in seen and time.perf_counter() >= failed_at:
            seen[figure] = time.perf_counter() - failed_at

    @mq.handler("job")
    async def job(msg: Message) -> None:
        if msg.payload["n"] >= boundary["n"]:
            mark("handled")

    async def heard(msg: PubSubMessage) -> None:
        if msg.payload["k"] >= boundary["k"]:
            mark("heard")

    async def produce() -> None:
        for n in itertools.count(1):
            while True:
                started = time.perf_counter()
                try:
                    await out_mq.publish(Message(type="job", payload={"n": n}))
                    break
                except BackendUnavailableError:
                    await asyncio.sleep(0.01)
            if started >= failed_at:
                boundary["n"] = min(boundary["n"], n)
                mark("published")
            started = time.perf_counter()
            try:
                await out_ps.publish("news", PubSubMessage(type="b", payload={"k": n}))
                if started >= failed_at:
                    boundary["k"] = min(boundary["k"], n)
            except BackendUnavailableError:
                pass
            await asyncio.sleep(0.01)

    await worker.start()
    await producer.start()
    await ps.subscribe("news", heard)
    producing = asyncio.create_task(produce())
    try:
        await asyncio.sleep(1.0)  # both busy, every connection warm
        failed_at = time.perf_counter()
        old = setup.kill_master() if failure == "kill" else setup.freeze_master()
        await asyncio.to_thread(setup.wait_for_new_master, old, GIVE_UP)
        mark("promoted")
        deadline = time.perf_counter() + GIVE_UP
        while len(seen) < len(FIGURES) and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
    finally:
        producing.cancel()
        await asyncio.gather(producing, return_exceptions=True)
        await worker.stop()
        await producer.stop()
        for sentinel, client in zip(sentinels, clients, strict=True):
            await client.aclose()
            for node in sentinel.sentinels:
                await node.aclose()
    return {figure: seen.get(figure, float("inf")) for figure in FIGURES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--defaults", action="store_true", help="meetq's default bounds")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"kill": [], "freeze": []}
    with RedisSentinelSetup() as setup:
        for _ in range(args.runs):
            for failure in results:
                setup.heal()
                results[failure].append(asyncio.run(_run(setup, failure, args.defaults)))
    bounds = DEFAULTS if args.defaults else SHORT
    print(
        f"meetq {meetq.__version__}, redis-py {redis.__version__}, Python "
        f"{platform.python_version()}; {args.runs} runs; bounds {bounds}; "
        "sentinel down-after 1000 ms"
    )
    print()
    print("| seconds after the failure | " + " | ".join(FIGURES) + " |")
    print("|---|" + "---:|" * len(FIGURES))
    for failure, runs in results.items():
        cells = []
        for figure in FIGURES:
            values = [run[figure] for run in runs]
            cells.append(
                f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
            )
        label = "kill -9 of the master" if failure == "kill" else "master frozen (SIGSTOP)"
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
