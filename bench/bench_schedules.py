"""Schedules benchmark (issue 11): fire lateness across processes, and what the fire loop
costs a drain. One command, one table:

    python bench/bench_schedules.py [--runs 3] [--seconds 10] [--every 0.1] [--drain 20000]

Starts its own redis-server on a free loopback port. Measured, medians over the runs:

- **lateness**: three worker processes consume one queue, so each runs the fire loop of
  one ``every`` schedule; this process consumes the fired messages without firing.
  *publish lateness* is the fired message's ``timestamp`` (taken by the process that won
  the fire step, just before its compare-and-set) minus the fire time it stands for;
  *handler lateness* is when this process's handler started minus the fire time (the
  fire step, the queue's wake-up and the claim on top). p50 and p99 over every fire of
  every run; plus how many fire times were published twice or not at all (both 0).
- **drain**: N pre-published no-op messages drained by one worker process, with the fire
  loop off (``fire_schedules: false``), and on with one schedule stored that does not
  come due during the drain (the loop sleeps), next to a bare redis-py RPUSH/BLMOVE-free
  reference (LPOP in pipelines of 100) in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

import meetq
from meetq import Message
from meetq.testing._redis_server import RedisServer


def _config(url: str, prefix: str, **queue: Any) -> dict[str, Any]:
    return {
        "redis": {"url": url, "key_prefix": prefix},
        "message_queue": {
            "type": "redis",
            "queue_name": "bench",
            "visibility_timeout": 30,
            "poll_interval": 100,
            **queue,
        },
        "event_bus": {"enabled": False},
    }


# -- lateness ------------------------------------------------------------------------


async def _fire_worker(url: str, prefix: str) -> None:
    qm = await meetq.initialize_queue_system(_config(url, prefix))
    mq = qm.get_message_queue()
    assert mq is not None

    @mq.handler("other")
    async def other(msg: Message) -> None:
        pass

    await qm.start()
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await qm.stop()


def _fire_ms(message: Message) -> float:
    return datetime.fromisoformat(message.headers["meetq-fire-time"]).timestamp() * 1000


async def _lateness(url: str, seconds: float, every: float) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    qm = await meetq.initialize_queue_system(_config(url, prefix, fire_schedules=False))
    mq = qm.get_message_queue()
    assert mq is not None
    publish: list[float] = []
    handler: list[float] = []
    ids: dict[float, set[str]] = {}

    @mq.handler("tick")
    async def tick(message: Message) -> None:
        now = time.time() * 1000
        fire = _fire_ms(message)
        ids.setdefault(fire, set()).add(message.id)
        publish.append(message.timestamp * 1000 - fire)
        handler.append(now - fire)

    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--fire-worker",
            url,
            prefix,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert (await proc.stdout.readline()).strip() == b"READY"
        async with qm:
            await mq.schedule("tick", Message(type="tick"), every=every, misfire_grace="10s")
            await asyncio.sleep(seconds)
            await mq.unschedule("tick")
            await asyncio.sleep(0.5)  # the last fired message reaches the handler
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 30)
    times = sorted(ids)
    step = round(every * 1000)
    missing = sum(round((b - a) / step) - 1 for a, b in itertools.pairwise(times))
    return {
        "publish": publish,
        "handler": handler,
        "fires": len(times),
        "doubled": sum(1 for v in ids.values() if len(v) > 1),
        "missing": missing,
    }


# -- drain ---------------------------------------------------------------------------


async def _drain(url: str, count: int, fire: bool) -> float:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    qm = await meetq.initialize_queue_system(_config(url, prefix, fire_schedules=fire))
    mq = qm.get_message_queue()
    assert mq is not None
    if fire:  # stored, never due during the drain: the loop sleeps
        await mq.schedule("later", Message(type="n"), every="1h")
    for start in range(0, count, 500):
        await mq.publish_batch([Message(type="n") for _ in range(min(500, count - start))])
    done = asyncio.Event()
    seen = 0

    @mq.handler("n")
    async def handle(msg: Message) -> None:
        nonlocal seen
        seen += 1
        if seen >= count:
            done.set()

    began = time.perf_counter()
    async with qm:
        await done.wait()
        took = time.perf_counter() - began
    return count / took


async def _bare(url: str, count: int) -> float:
    client = aioredis.Redis.from_url(url)
    key = f"bare{uuid.uuid4().hex[:8]}"
    for start in range(0, count, 500):
        await client.rpush(key, *[b"x" * 60] * min(500, count - start))
    began = time.perf_counter()
    left = count
    while left > 0:
        pipe = client.pipeline(transaction=False)
        for _ in range(min(100, left)):
            pipe.lpop(key)
        left -= len(await pipe.execute())
    took = time.perf_counter() - began
    await client.aclose()
    return count / took


def _child(kind: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, url, json.dumps(vars(args))],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=0.1)
    parser.add_argument("--drain", type=int, default=20000)
    parser.add_argument("--fire-worker", nargs=2)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.fire_worker:
        asyncio.run(_fire_worker(*args.fire_worker))
        return
    if args.child:
        kind, url, raw = args.child
        opts = json.loads(raw)
        if kind == "lateness":
            result: Any = asyncio.run(_lateness(url, opts["seconds"], opts["every"]))
        elif kind == "bare":
            result = asyncio.run(_bare(url, opts["drain"]))
        else:
            result = asyncio.run(_drain(url, opts["drain"], kind == "drain_on"))
        print(json.dumps(result))
        return
    with RedisServer() as server:
        late = {"publish": [], "handler": [], "fires": 0, "doubled": 0, "missing": 0}
        drains: dict[str, list[float]] = {"drain_off": [], "drain_on": [], "bare": []}
        for _ in range(args.runs):
            run = _child("lateness", server.url, args)
            for key in ("publish", "handler"):
                late[key] += run[key]
            for key in ("fires", "doubled", "missing"):
                late[key] += run[key]
            for kind in drains:  # interleaved, so drift on a shared machine hits all
                drains[kind].append(_child(kind, server.url, args))
    print(f"machine: {os.cpu_count()} cores (shared); {args.runs} runs; redis-server {server.url}")
    print(f"lateness: 3 processes, every={args.every}s for {args.seconds}s per run")
    print("| measure | p50 ms | p99 ms |")
    print("|---|---|---|")
    for key, label in (("publish", "fire time -> fire step"), ("handler", "fire time -> handler")):
        print(f"| {label} | {_pct(late[key], 0.5):.2f} | {_pct(late[key], 0.99):.2f} |")
    print(
        f"fire times: {late['fires']}, published twice: {late['doubled']}, "
        f"missing: {late['missing']}"
    )
    print(f"drain of {args.drain} no-op messages, one worker process, median msg/s")
    print("| setup | msg/s | ratio to bare |")
    print("|---|---|---|")
    bare = statistics.median(drains["bare"])
    for kind, label in (
        ("drain_off", "fire_schedules: false"),
        ("drain_on", "fire loop on, one schedule stored"),
        ("bare", "bare redis-py LPOP, pipelines of 100"),
    ):
        value = statistics.median(drains[kind])
        print(f"| {label} | {value:,.0f} | {value / bare:.2f} |")


if __name__ == "__main__":
    main()
