"""Rate and concurrency limits (issue 11): what a limit costs the claim, and how close
the measured rate comes to the configured one.

    python bench/bench_limits.py [--runs 5] [--drain 10000] [--rate-seconds 5]

Starts its own redis-server on a free loopback port. Measured, per backend (memory,
redis), kinds interleaved within each run so machine noise hits them alike:

- **claim overhead**: a worker (32 slots) handling types ``job`` and ``other`` drains
  ``--drain`` pre-published no-op ``job`` messages, with no limit configured, then
  with ``rate_limits: {other: "100/s"}`` and ``concurrency_limits: {other: 4}``:
  a limit on *another* type the same worker claims (each exchange reads its lease count
  and its bucket), and a third time with the limits on a type this worker does not
  handle. Messages per second, and each limited run's ratio to the unlimited one of the
  same run;
- **exchange cost**: the claim primitive alone, on a backend handle of its own: one
  ``exchange`` settling the last message and claiming the next of ``job`` (types
  ``job`` and ``other``), microseconds per call, with no limits and with the limits on
  ``other`` above, in alternating blocks of 200 calls (median block);
- **measured rate**: three workers (on Redis: three backend objects, as three processes
  would have; on memory: one broker) drain a backlog of one rate-limited type for
  ``--rate-seconds``; the starts counted in that span from the first, per second,
  beside the configured rate and what the bucket allows at most in that span
  (``burst + rate * span``), for ``50/s``, ``500/s`` and ``500/s burst 10``.

Figures are medians over ``--runs`` runs. The machine is shared and has 2 cores:
compare the ratios within one run, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import time
import uuid
from typing import Any

import redis

from meetq import Message, MessageQueue, initialize_queue_system
from meetq.core._publishing import queue_options
from meetq.core.config import MessageQueueConfig
from meetq.core.protocols import LeaseRef, Settlement, StoredMessage, WorkQueueBackend
from meetq.testing import RedisServer

BLOCK = 200
RATES = ("50/s", "500/s", "500/s burst 10")
LIMITS: dict[str, dict[str, Any]] = {
    "none": {},
    "other type": {"rate_limits": {"other": "100/s"}, "concurrency_limits": {"other": 4}},
    "unhandled type": {"rate_limits": {"elsewhere": "100/s"}},
}


def _config(backend: str, url: str, prefix: str, **queue: Any) -> dict[str, Any]:
    return {
        "redis": {"url": url, "key_prefix": prefix},
        "memory": {"broker": prefix},
        "message_queue": {
            "type": backend,
            "queue_name": "bench",
            "workers": 32,
            "poll_interval": 100,
            **queue,
        },
        "event_bus": {"enabled": False},
        "task_dispatcher": {"enabled": False},
    }


async def _publish(mq: MessageQueue, message_type: str, count: int) -> None:
    for start in range(0, count, 1000):
        size = min(1000, count - start)
        await mq.publish_batch([Message(type=message_type) for _ in range(size)])


async def drain(backend: str, url: str, count: int, limits: dict[str, Any]) -> float:
    """Messages per second: ``count`` no-op ``job`` messages, one worker."""
    prefix = f"b{uuid.uuid4().hex[:8]}"
    qm = await initialize_queue_system(_config(backend, url, prefix, **limits))
    mq = qm.get_message_queue()
    assert mq is not None
    await _publish(mq, "job", count)
    done = asyncio.Event()
    seen = 0

    async def job(message: Message) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    async def other(message: Message) -> None: ...

    mq.register_handler("job", job)
    mq.register_handler("other", other)
    began = time.perf_counter()
    await qm.start()
    await done.wait()
    while (await mq.stats())["total_processed"] < count:  # settled too
        await asyncio.sleep(0.001)
    took = time.perf_counter() - began
    await qm.stop()
    return count / took


async def exchange_cost(backend: str, url: str, blocks: int) -> dict[str, float]:
    """Microseconds per exchange (ack one, claim one), by limits, alternating blocks."""
    qm = await initialize_queue_system(_config(backend, url, f"x{uuid.uuid4().hex[:8]}"))
    mq = qm.get_message_queue()
    assert mq is not None
    handles: dict[str, WorkQueueBackend] = {}
    for name in ("none", "other type"):
        options = queue_options(MessageQueueConfig(**LIMITS[name]))
        handles[name] = mq.backend.work_queue(f"cost-{name}", options)
        count = BLOCK * blocks + 1
        await handles[name].enqueue(
            [StoredMessage(id=f"m{i}", type="job", priority=1, body=b"{}") for i in range(count)]
        )
    held: dict[str, list[Settlement]] = {name: [] for name in handles}
    timings: dict[str, list[float]] = {name: [] for name in handles}
    for _ in range(blocks):
        for name, raw in handles.items():
            began = time.perf_counter()
            for _ in range(BLOCK):
                got = await raw.exchange(
                    held[name], types=["job", "other"], claim=1, lease_ms=30_000
                )
                held[name] = [
                    Settlement(lease=LeaseRef(id=c.id, type=c.type, token=c.token), outcome="ack")
                    for c in got.claimed
                ]
            timings[name].append((time.perf_counter() - began) / BLOCK * 1e6)
    await qm.stop()
    return {name: statistics.median(values) for name, values in timings.items()}


async def measured_rate(backend: str, url: str, rate: str, seconds: float) -> float:
    """Starts per second over ``seconds`` from the first, three workers, one limit."""
    prefix = f"r{uuid.uuid4().hex[:8]}"
    config = _config(backend, url, prefix, rate_limits={"tick": rate})
    managers = [await initialize_queue_system(config) for _ in range(3)]
    queues = [qm.get_message_queue() for qm in managers]
    starts: list[float] = []

    async def tick(message: Message) -> None:
        starts.append(time.perf_counter())

    per_second = float(rate.split("/")[0])
    for mq in queues:
        assert mq is not None
        mq.register_handler("tick", tick)
    assert queues[0] is not None
    await _publish(queues[0], "tick", int(per_second * seconds * 1.5) + 100)
    for qm in managers:
        await qm.start()
    while not starts or time.perf_counter() < starts[0] + seconds + 0.2:
        await asyncio.sleep(0.05)
    first = starts[0]
    counted = sum(1 for s in starts if s < first + seconds)
    for qm in managers:
        await qm.stop()
    return counted / seconds


async def run(args: argparse.Namespace, url: str) -> dict[tuple[str, str], list[float]]:
    results: dict[tuple[str, str], list[float]] = {}
    names = list(LIMITS)
    for run_index in range(args.runs):
        # The order turns each run, so the first drain's warm-up falls on each in turn.
        order = names[run_index % len(names) :] + names[: run_index % len(names)]
        for backend in ("memory", "redis"):
            for name in order:
                figure = await drain(backend, url, args.drain, LIMITS[name])
                results.setdefault((backend, f"drain:{name}"), []).append(figure)
            for name, micros in (await exchange_cost(backend, url, 10)).items():
                results.setdefault((backend, f"cost:{name}"), []).append(micros)
            for rate in RATES:
                figure = await measured_rate(backend, url, rate, args.rate_seconds)
                results.setdefault((backend, f"rate:{rate}"), []).append(figure)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--drain", type=int, default=10_000)
    parser.add_argument("--rate-seconds", type=float, default=5.0)
    args = parser.parse_args()
    with RedisServer() as server:
        version = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True
        ).stdout.split()[2]
        results = asyncio.run(run(args, server.url))

    def med(backend: str, key: str) -> float:
        return statistics.median(results[(backend, key)])

    def ratio_range(backend: str, key: str) -> str:
        pairs = zip(results[(backend, key)], results[(backend, "drain:none")], strict=True)
        ratios = [a / b for a, b in pairs]
        return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"

    print(
        f"machine: {os.cpu_count()} cores (shared), Python {platform.python_version()}, "
        f"redis-py {redis.__version__}, redis-server {version}; median of {args.runs} runs; "
        f"drain={args.drain:,}, rate span {args.rate_seconds:g} s"
    )
    print()
    print("| drain of `job` (msg/s), limits configured on | memory | vs none | redis | vs none |")
    print("|---|---:|---:|---:|---:|")
    for name in LIMITS:
        key = f"drain:{name}"
        cells = []
        for backend in ("memory", "redis"):
            cells.append(f"{med(backend, key):,.0f}")
            cells.append("1.00" if name == "none" else ratio_range(backend, key))
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print("| one exchange (ack 1 + claim 1), µs | memory | redis |")
    print("|---|---:|---:|")
    for name in ("none", "other type"):
        cells = [f"{med(b, f'cost:{name}'):.1f}" for b in ("memory", "redis")]
        print(f"| limits on: {name} | " + " | ".join(cells) + " |")
    ratios = []
    for b in ("memory", "redis"):
        pairs = zip(results[(b, "cost:other type")], results[(b, "cost:none")], strict=True)
        ratios.append(f"{statistics.median([x / y for x, y in pairs]):.3f}")
    print("| ratio | " + " | ".join(ratios) + " |")
    print()
    print(
        "| configured rate (3 workers) | bucket's most/s | memory measured/s | ratio "
        "| redis measured/s | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for rate in RATES:
        per_second = float(rate.split("/")[0])
        burst = float(rate.split("burst")[1]) if "burst" in rate else 1.0
        most = (burst + per_second * args.rate_seconds) / args.rate_seconds
        cells = [f"{most:,.1f}"]
        for backend in ("memory", "redis"):
            value = med(backend, f"rate:{rate}")
            cells += [f"{value:,.1f}", f"{value / per_second:.3f}"]
        print(f"| {rate} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
