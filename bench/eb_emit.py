"""Emit N events to one no-op async handler and print events/s.

    python bench/eb_emit.py N

Small on purpose: run it under ``valgrind --tool=callgrind`` for two values of N and divide
the difference in instructions by the difference in N to get a repeatable per-event cost
(docs/benchmarks.md, "Re-layering").
"""

from __future__ import annotations

import asyncio
import sys
import time

import meetq


async def main(n: int) -> None:
    bus = meetq.LocalEventBus()
    done = asyncio.Event()
    count = 0

    async def handler(event: meetq.LocalEvent) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    bus.on("t", handler)
    async with bus:
        started = time.perf_counter()
        for i in range(n):
            bus.emit("t", {"i": i})
            if i % 1000 == 999:
                await asyncio.sleep(0)
        await done.wait()
        print(f"{n / (time.perf_counter() - started):.0f} events/s")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
