"""Publish throughput of two meetq checkouts, side by side, alternating.

    python bench/bench_ab_publish.py OLD_TREE NEW_TREE [--rounds 10] [-n 3000]

For comparing a change with the code before it (``git worktree add ../old <commit>``):
one private redis-server on a free loopback port serves both; every sample is a fresh
child process that imports meetq from one tree (``PYTHONPATH``), publishes ``n`` messages
one at a time, then 20 batches of 500, then ``n`` bare ``RPUSH`` with redis-py in the same
process. Trees alternate so the machine's noise hits both alike; the table shows medians
and the single-publish ratio to bare redis-py of the same child.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from meetq.testing import RedisServer

CHILD = r"""
import asyncio, json, sys, time, uuid
import meetq
from meetq import Message
import redis.asyncio as aioredis


async def main(url: str, n: int) -> None:
    prefix = "ab" + uuid.uuid4().hex[:8]
    qm = await meetq.initialize_queue_system(
        {"message_queue": {"type": "redis", "queue_name": prefix},
         "redis": {"url": url, "key_prefix": prefix}}
    )
    mq = qm.get_message_queue()
    async with qm:
        for i in range(200):  # warm-up: scripts loaded, connections open
            await mq.publish(Message(type="t", payload={"i": i}))
        t = time.perf_counter()
        for i in range(n):
            await mq.publish(Message(type="t", payload={"i": i}))
        single = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(20):
            await mq.publish_batch([Message(type="t", payload={"i": i}) for i in range(500)])
        batched = 20 * 500 / (time.perf_counter() - t)
    client = aioredis.Redis.from_url(url)
    t = time.perf_counter()
    for _ in range(n):
        await client.rpush(prefix + ":bare", b"x" * 60)
    bare = n / (time.perf_counter() - t)
    await client.aclose()
    print(json.dumps({"single": single, "batched": batched, "bare": bare}))


asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def _sample(tree: str, url: str, n: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(n)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.abspath(tree),
        check=False,
    )
    if out.returncode:
        raise SystemExit(f"{tree}: child failed:\n{out.stderr[-2000:]}")
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("-n", type=int, default=3000)
    args = parser.parse_args()
    samples: dict[str, list[dict[str, float]]] = {args.old: [], args.new: []}
    server = RedisServer()
    server.start()
    try:
        for _ in range(args.rounds):
            for tree in (args.old, args.new):
                samples[tree].append(_sample(tree, server.url, args.n))
    finally:
        server.stop()
    print(f"median of {args.rounds} alternations, n={args.n}")
    print("| tree | publish one at a time (msg/s) | single / bare RPUSH | batched x500 (msg/s) |")
    print("|---|---:|---:|---:|")
    for tree, rows in samples.items():
        single = statistics.median(r["single"] for r in rows)
        ratio = statistics.median(r["single"] / r["bare"] for r in rows)
        batched = statistics.median(r["batched"] for r in rows)
        print(f"| {tree} | {single:,.0f} | {ratio:.2f} | {batched:,.0f} |")


if __name__ == "__main__":
    main()
