"""LocalEventBus.emit from other threads: hand-over latency and throughput, next to a bare
``loop.call_soon_threadsafe`` hand-over measured in the same run.

    python bench/bench_emit_threads.py [--runs 5]

Measured (medians over the runs):

- Latency: one plain thread emits, waits until the async handler has run (a
  ``threading.Event``), and repeats; microseconds per round trip, p50 and p99. Bare: the
  same round trip with ``loop.call_soon_threadsafe(queue.put_nowait, item)`` and a consumer
  task. (Before the fix an emit from a thread could sit for seconds: it set a loop future
  from the thread, which never woke the selector.)
- Throughput: 8 threads emit 20,000 events each to one async handler; events/s until the
  last is handled, next to the same count emitted on the loop itself.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time

from meetq import LocalEvent, LocalEventBus

ROUND_TRIPS = 2000
THREADS = 8
PER_THREAD = 20_000


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency_meetq() -> list[float]:
    bus = LocalEventBus(buffer_size=10, workers=1)
    handled = threading.Event()

    async def handler(event: LocalEvent) -> None:
        handled.set()

    bus.on("ping", handler)
    times: list[float] = []

    def pinger() -> None:
        for _ in range(ROUND_TRIPS):
            start = time.perf_counter()
            bus.emit("ping", {})
            handled.wait()
            times.append(time.perf_counter() - start)
            handled.clear()

    async with bus:
        await asyncio.to_thread(pinger)
    return times


async def latency_bare() -> list[float]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[int] = asyncio.Queue(10)
    handled = threading.Event()

    async def consumer() -> None:
        while True:
            await queue.get()
            handled.set()

    task = asyncio.create_task(consumer())
    times: list[float] = []

    def pinger() -> None:
        for i in range(ROUND_TRIPS):
            start = time.perf_counter()
            loop.call_soon_threadsafe(queue.put_nowait, i)
            handled.wait()
            times.append(time.perf_counter() - start)
            handled.clear()

    await asyncio.to_thread(pinger)
    task.cancel()
    return times


async def throughput(from_threads: bool) -> float:
    total = THREADS * PER_THREAD
    bus = LocalEventBus(buffer_size=total, workers=4)
    done = asyncio.Event()
    count = 0

    async def handler(event: LocalEvent) -> None:
        nonlocal count
        count += 1
        if count == total:
            done.set()

    bus.on("e", handler)

    def emitter() -> None:
        for _ in range(PER_THREAD):
            bus.emit("e", {"n": 1})

    async with bus:
        start = time.perf_counter()
        if from_threads:
            threads = [threading.Thread(target=emitter) for _ in range(THREADS)]
            for t in threads:
                t.start()
            await done.wait()
            for t in threads:
                t.join()
        else:
            for _ in range(THREADS):
                emitter()
                await asyncio.sleep(0)
            await done.wait()
        elapsed = time.perf_counter() - start
    return total / elapsed


async def main(runs: int) -> None:
    rows: dict[str, list[float]] = {k: [] for k in ("m50", "m99", "b50", "b99", "thr", "loop")}
    for _ in range(runs):
        bare = await latency_bare()
        ours = await latency_meetq()
        rows["b50"].append(_percentile(bare, 0.5) * 1e6)
        rows["b99"].append(_percentile(bare, 0.99) * 1e6)
        rows["m50"].append(_percentile(ours, 0.5) * 1e6)
        rows["m99"].append(_percentile(ours, 0.99) * 1e6)
        rows["loop"].append(await throughput(False))
        rows["thr"].append(await throughput(True))
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"python {sys.version.split()[0]}, {runs} runs, medians")
    print("| measurement | bare | meetq | ratio |")
    print("|---|---:|---:|---:|")
    print(
        f"| thread emit -> handler round trip p50 (us) | {med['b50']:.0f} | {med['m50']:.0f} "
        f"| {med['m50'] / med['b50']:.2f} |"
    )
    print(
        f"| thread emit -> handler round trip p99 (us) | {med['b99']:.0f} | {med['m99']:.0f} "
        f"| {med['m99'] / med['b99']:.2f} |"
    )
    print(
        f"| {THREADS} threads x {PER_THREAD:,} emits (events/s) vs the same on the loop "
        f"| {med['loop']:,.0f} | {med['thr']:,.0f} | {med['thr'] / med['loop']:.2f} |"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
