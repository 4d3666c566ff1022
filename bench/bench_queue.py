"""MessageQueue benchmark: one command, one table, both backends, a bare redis-py reference.

    python bench/bench_queue.py [--runs 3] [--drain 20000]

Starts its own redis-server on a free loopback port. Each (backend, run) executes in a
fresh child process so peak memory (ru_maxrss) belongs to that run alone. Figures are
medians over the runs. Measured:

- publish, one at a time (await each) and batched (publish_batch of 500);
- end-to-end drain of N pre-published no-op messages by one worker process;
- publish-to-handler-start latency on an idle worker (500 messages, 5 ms apart);
- peak RSS of the child;
- the bare reference: RPUSH one at a time, pipelined RPUSH, and a reliable-queue cycle
  (BLMOVE to a processing list, then LREM) per item, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import redis
import redis.asyncio as aioredis

import meetq
from meetq import Message
from meetq.testing._redis_server import RedisServer

BATCH = 500
SINGLE = 5000
LATENCY_COUNT = 500
LATENCY_GAP = 0.005


def _config(backend: str, url: str, workers: int) -> dict[str, Any]:
    return {
        "redis": {"url": url, "key_prefix": f"bench{uuid.uuid4().hex[:8]}"},
        "message_queue": {
            "type": backend,
            "queue_name": "bench",
            "workers": workers,
            "visibility_timeout": 30,
            "poll_interval": 100,
        },
        "event_bus": {"enabled": False},
    }


async def _publish_figures(backend: str, url: str) -> dict[str, float]:
    qm = await meetq.initialize_queue_system(_config(backend, url, 1))
    mq = qm.get_message_queue()
    assert mq is not None
    msgs = [Message(type="noop", payload={"i": i}) for i in range(SINGLE)]
    start = time.perf_counter()
    for m in msgs:
        await mq.publish(m)
    single = SINGLE / (time.perf_counter() - start)
    batches = [[Message(type="noop", payload={"i": i}) for i in range(BATCH)] for _ in range(40)]
    start = time.perf_counter()
    for batch in batches:
        await mq.publish_batch(batch)
    batched = BATCH * len(batches) / (time.perf_counter() - start)
    await mq.clear()
    await qm.stop()
    return {"publish_single": single, "publish_batch": batched}


async def _drain(backend: str, url: str, count: int, workers: int) -> float:
    qm = await meetq.initialize_queue_system(_config(backend, url, workers))
    mq = qm.get_message_queue()
    assert mq is not None
    for start in range(0, count, 1000):
        await mq.publish_batch(
            [Message(type="noop", payload={"i": i}) for i in range(start, min(count, start + 1000))]
        )
    done = asyncio.Event()
    seen = 0

    @mq.handler("noop")
    async def noop(msg: Message) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    t0 = time.perf_counter()
    await qm.start()
    await done.wait()
    while (await mq.stats())["total_processed"] < count:  # acks are settled too
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - t0
    await qm.stop()
    return count / elapsed


async def _latency(backend: str, url: str) -> dict[str, float]:
    qm = await meetq.initialize_queue_system(_config(backend, url, 4))
    mq = qm.get_message_queue()
    assert mq is not None
    sent: dict[str, float] = {}
    lat: list[float] = []
    done = asyncio.Event()

    @mq.handler("ping")
    async def ping(msg: Message) -> None:
        lat.append(time.perf_counter() - sent[msg.id])
        if len(lat) == LATENCY_COUNT:
            done.set()

    await qm.start()
    await asyncio.sleep(0.2)  # let the worker go idle
    for _ in range(LATENCY_COUNT):
        m = Message(type="ping")
        sent[m.id] = time.perf_counter()
        await mq.publish(m)
        await asyncio.sleep(LATENCY_GAP)
    await asyncio.wait_for(done.wait(), 60)
    await qm.stop()
    lat.sort()
    return {"lat_p50_ms": lat[len(lat) // 2] * 1000, "lat_p99_ms": lat[int(len(lat) * 0.99)] * 1000}


async def _bare(url: str, count: int) -> dict[str, float]:
    client = aioredis.Redis.from_url(url)
    key, proc = f"bare:{uuid.uuid4().hex}", f"bare:{uuid.uuid4().hex}:p"
    start = time.perf_counter()
    for i in range(SINGLE):
        await client.rpush(key, b"x%d" % i)
    single = SINGLE / (time.perf_counter() - start)
    await client.delete(key)
    start = time.perf_counter()
    for _ in range(40):
        pipe = client.pipeline(transaction=False)
        for i in range(BATCH):
            pipe.rpush(key, b"x%d" % i)
        await pipe.execute()
    batched = 40 * BATCH / (time.perf_counter() - start)
    await client.delete(key)
    for s in range(0, count, 1000):
        await client.rpush(key, *[b"x%d" % i for i in range(s, min(count, s + 1000))])
    start = time.perf_counter()
    for _ in range(count):
        item = await client.blmove(key, proc, 1, "LEFT", "RIGHT")
        await client.lrem(proc, 1, item)
    cycle = count / (time.perf_counter() - start)
    await client.delete(key, proc)
    await client.aclose()
    return {"publish_single": single, "publish_batch": batched, "drain": cycle}


async def _child(kind: str, url: str, drain: int) -> dict[str, float]:
    if kind == "bare":
        return await _bare(url, drain)
    figures = await _publish_figures(kind, url)
    figures["drain"] = await _drain(kind, url, drain, workers=32)
    figures.update(await _latency(kind, url))
    return figures


def _run_child(kind: str, url: str, drain: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--url", url, "--drain", str(drain)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--drain", type=int, default=20_000)
    parser.add_argument("--child")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        figures = asyncio.run(_child(args.child, args.url, args.drain))
        figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(figures))
        return

    with RedisServer() as server:
        version = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True
        ).stdout.split()[2]
        results: dict[str, list[dict[str, float]]] = {"memory": [], "redis": [], "bare": []}
        for _ in range(args.runs):
            for kind in results:  # interleaved, so machine noise hits all alike
                results[kind].append(_run_child(kind, server.url, args.drain))

    def med(kind: str, key: str) -> float:
        values = [r[key] for r in results[kind] if key in r]
        return statistics.median(values) if values else float("nan")

    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"redis-py {redis.__version__}, redis-server {version}; "
        f"median of {args.runs} runs; drain={args.drain}, worker pool 32"
    )
    rows = [
        ("publish, one at a time (msg/s)", "publish_single", "{:,.0f}"),
        ("publish, batched x500 (msg/s)", "publish_batch", "{:,.0f}"),
        (f"drain {args.drain:,} no-op (msg/s)", "drain", "{:,.0f}"),
        ("idle latency p50 (ms)", "lat_p50_ms", "{:.2f}"),
        ("idle latency p99 (ms)", "lat_p99_ms", "{:.2f}"),
        ("peak RSS (MB)", "peak_rss_mb", "{:.0f}"),
    ]
    header = (
        f"| {'figure':<34} | {'memory':>10} | {'redis':>10} "
        f"| {'bare redis-py':>13} | {'redis/bare':>10} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for label, key, fmt in rows:
        mem, red, bare = med("memory", key), med("redis", key), med("bare", key)
        ratio = f"{red / bare:.2f}x" if bare == bare and key not in ("peak_rss_mb",) else ""
        bare_text = fmt.format(bare) if bare == bare else "-"
        print(
            f"| {label:<34} | {fmt.format(mem):>10} | {fmt.format(red):>10} | "
            f"{bare_text:>13} | {ratio:>10} |"
        )


if __name__ == "__main__":
    main()
