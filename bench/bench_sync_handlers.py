"""Plain (sync) handler drain on the memory backend: how fast the thread hand-off is.

    python bench/bench_sync_handlers.py [--runs 5] [--drain 20000] [--workers 4]

Pre-publishes N messages, then times one MessageQueue draining them with a plain no-op
handler, and the same with an ``async def`` no-op as the reference. Median of the runs,
each in this process on a fresh backend.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from meetq import Message, MessageQueue
from meetq.backends.memory._backend import MemoryBackend


async def drain(count: int, workers: int, plain: bool) -> float:
    mq = MessageQueue(MemoryBackend(), queue_name="bench", workers=workers, poll_interval="50ms")
    done = asyncio.Event()
    seen = 0
    loop = asyncio.get_running_loop()

    def count_one() -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    def plain_handler(msg: Message) -> None:
        loop.call_soon_threadsafe(count_one)

    async def async_handler(msg: Message) -> None:
        count_one()

    handler: Any = plain_handler if plain else async_handler
    mq.register_handler("job", handler)
    for start in range(0, count, 1000):
        await mq.publish_batch([Message(type="job") for _ in range(min(1000, count - start))])
    began = time.perf_counter()
    async with mq:
        await done.wait()
        elapsed = time.perf_counter() - began
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--drain", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    for plain in (True, False):
        rates = [asyncio.run(drain(args.drain, args.workers, plain)) for _ in range(args.runs)]
        kind = "plain def" if plain else "async def"
        print(f"{kind}: median {statistics.median(rates):,.0f} msg/s over {args.runs} runs")


if __name__ == "__main__":
    main()
