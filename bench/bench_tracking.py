"""Status, result and cancel (issue 11): what they cost and how fast they act.

    python bench/bench_tracking.py [--rounds 5] [-n 5000] [--cancels 200] [--base-rev REV]

One private redis-server on a free loopback port serves everything. Three parts:

1. **Drain throughput before/after**: every sample is a fresh child process that
   imports meetq from one tree (``PYTHONPATH``), publishes ``n`` messages in batches and
   times one ``MessageQueue`` (32 workers, no-op handler) draining them. Trees alternate
   (the code before tracking, checked out with ``git worktree`` at ``--base-rev``, by
   default the parent of the commit that added ``meetq/core/tracking.py``; this tree with
   ``result_ttl`` off, the default; this tree with ``result_ttl: 60s``) so the machine's
   noise hits each alike; beside them, bare redis-py (``RPUSH`` then ``LPOP 32``).
2. **Cancel to handler stopped, across processes**: a worker child runs handlers that
   wait forever and prints the wall time at which each one was cancelled; this process
   publishes, waits for the start, calls ``cancel()`` and subtracts (one host, one clock).
3. **status() calls per second** on a waiting and a running message, one caller and 32
   concurrent callers, on Redis and on memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import meetq
from meetq import Message
from meetq.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent

DRAIN_CHILD = r"""
import asyncio, json, sys, time, uuid
import meetq
from meetq import Message
import redis.asyncio as aioredis


async def main(url: str, n: int, result_ttl: str) -> None:
    prefix = "tr" + uuid.uuid4().hex[:8]
    mqcfg = {"type": "redis", "queue_name": prefix, "workers": 32, "poll_interval": "20ms"}
    if result_ttl != "-":
        mqcfg["result_ttl"] = result_ttl
    qm = await meetq.initialize_queue_system(
        {"message_queue": mqcfg, "redis": {"url": url, "key_prefix": prefix},
         "event_bus": {"enabled": False}}
    )
    mq = qm.get_message_queue()
    for start in range(0, n, 1000):
        await mq.publish_batch([Message(type="noop", payload={"i": i})
                                for i in range(start, min(n, start + 1000))])
    done = asyncio.Event()
    seen = 0

    @mq.handler("noop")
    async def noop(msg):
        nonlocal seen
        seen += 1
        if seen == n:
            done.set()
        return seen

    t0 = time.perf_counter()
    await qm.start()
    await done.wait()
    while (await mq.stats())["total_processed"] < n:
        await asyncio.sleep(0.001)
    rate = n / (time.perf_counter() - t0)
    await qm.stop()
    client = aioredis.Redis.from_url(url)
    key = prefix + ":bare"
    for start in range(0, n, 1000):
        await client.rpush(key, *[b"x" * 60] * min(1000, n - start))
    t0 = time.perf_counter()
    got = 0
    while got < n:
        got += len(await client.lpop(key, 32) or [])
    bare = n / (time.perf_counter() - t0)
    await client.aclose()
    print(json.dumps({"rate": rate, "bare": bare}))


asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""

# The same drain on memory, timed in CPU seconds of the child: the in-process cost per
# message, much less moved by other processes on a shared machine than wall time.
MEMORY_CHILD = r"""
import asyncio, json, sys, time
import meetq
from meetq import Message


async def main(n: int) -> None:
    qm = await meetq.initialize_queue_system(
        {"message_queue": {"type": "memory", "queue_name": "m", "workers": 32},
         "event_bus": {"enabled": False}}
    )
    mq = qm.get_message_queue()
    for start in range(0, n, 1000):
        await mq.publish_batch([Message(type="noop") for _ in range(min(1000, n - start))])
    done = asyncio.Event()
    seen = 0

    @mq.handler("noop")
    async def noop(msg):
        nonlocal seen
        seen += 1
        if seen == n:
            done.set()

    t0 = time.process_time()
    await qm.start()
    await done.wait()
    cpu = time.process_time() - t0
    await qm.stop()
    print(json.dumps({"us": cpu / n * 1e6}))


asyncio.run(main(int(sys.argv[1])))
"""

CANCEL_WORKER = r"""
import asyncio, sys, time
import meetq


async def main(url: str, prefix: str) -> None:
    qm = await meetq.initialize_queue_system({
        "redis": {"url": url, "key_prefix": prefix},
        "message_queue": {"type": "redis", "queue_name": "cancels", "workers": 4},
        "event_bus": {"enabled": False},
    })
    mq = qm.get_message_queue()

    @mq.handler("hold")
    async def hold(msg):
        print(f"STARTED {msg.id}", flush=True)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            print(f"CANCELLED {msg.id} {time.time():.6f}", flush=True)
            raise

    await qm.start()
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await qm.stop()


asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _base_tree(rev: str | None, where: Path) -> tuple[Path, str]:
    if rev is None:
        added = subprocess.run(
            ["git", "log", "--diff-filter=A", "--format=%H", "--", "meetq/core/tracking.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if not added:
            raise SystemExit("no commit adds meetq/core/tracking.py yet: pass --base-rev")
        rev = added[-1] + "^"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(where), rev],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    short = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    return where, short


def _drain_sample(tree: Path, url: str, n: int, result_ttl: str) -> dict[str, float]:
    if url == "memory":
        return _child(tree, [MEMORY_CHILD, str(4 * n)])
    return _child(tree, [DRAIN_CHILD, url, str(n), result_ttl])


def _child(tree: Path, argv: list[str]) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        [sys.executable, "-c", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(tree),
        check=False,
    )
    if out.returncode:
        raise SystemExit(f"{tree}: child failed:\n{out.stderr[-2000:]}")
    result: dict[str, float] = json.loads(out.stdout)
    return result


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _cancel_latency(url: str, count: int) -> dict[str, float]:
    prefix = "trc" + uuid.uuid4().hex[:8]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CANCEL_WORKER,
        url,
        prefix,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"),
    )
    assert proc.stdout is not None and proc.stdin is not None

    async def line() -> list[str]:
        assert proc.stdout is not None
        raw = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not raw:
            raise SystemExit(f"cancel worker exited ({proc.returncode})")
        return raw.decode().split()

    qm = await meetq.initialize_queue_system(
        {
            "redis": {"url": url, "key_prefix": prefix},
            "message_queue": {"type": "redis", "queue_name": "cancels"},
            "event_bus": {"enabled": False},
        }
    )
    mq = qm.get_message_queue()
    assert mq is not None
    stopped: list[float] = []
    returned: list[float] = []
    try:
        assert (await line()) == ["READY"]
        for _ in range(count):
            message_id = await mq.publish(Message(type="hold"))
            assert (await line()) == ["STARTED", message_id]
            t0 = time.time()
            assert await mq.cancel(message_id)
            returned.append(time.time() - t0)
            kind, got, at = await line()
            assert (kind, got) == ("CANCELLED", message_id)
            stopped.append(float(at) - t0)
    finally:
        proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 30)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await qm.stop()
    ms = 1000.0
    return {
        "stopped_p50": statistics.median(stopped) * ms,
        "stopped_p99": _pct(stopped, 0.99) * ms,
        "returned_p50": statistics.median(returned) * ms,
        "returned_p99": _pct(returned, 0.99) * ms,
    }


async def _status_rate(config: dict[str, Any], seconds: float) -> dict[str, float]:
    qm = await meetq.initialize_queue_system(config)
    mq = qm.get_message_queue()
    assert mq is not None
    release = asyncio.Event()

    @mq.handler("hold")
    async def hold(msg: Message) -> None:
        await release.wait()

    waiting = await mq.publish(Message(type="other"))
    running = await mq.publish(Message(type="hold"))
    out: dict[str, float] = {}
    async with qm:
        while (await mq.status(running)).state != "running":
            await asyncio.sleep(0.01)
        for name, message_id in (("waiting", waiting), ("running", running)):
            for callers in (1, 32):
                calls = 0
                end = time.perf_counter() + seconds

                async def caller(message_id: str = message_id, end: float = end) -> None:
                    nonlocal calls
                    while time.perf_counter() < end:
                        await mq.status(message_id)
                        calls += 1

                t0 = time.perf_counter()
                await asyncio.gather(*(caller() for _ in range(callers)))
                out[f"{name}/{callers}"] = calls / (time.perf_counter() - t0)
        release.set()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--cancels", type=int, default=200)
    parser.add_argument("--status-seconds", type=float, default=2.0)
    parser.add_argument("--base-rev", default=None)
    args = parser.parse_args()
    server = RedisServer()
    server.start()
    tmp = Path(tempfile.mkdtemp(prefix="meetq-bench-base-"))
    base, short = _base_tree(args.base_rev, tmp / "base")
    try:
        trees = [
            (f"before tracking ({short})", base, "-"),
            ("this tree, result_ttl off", ROOT, "-"),
            ("this tree, result_ttl 60s", ROOT, "60s"),
        ]
        drains: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in trees}
        cpu: dict[str, list[float]] = {label: [] for label, _, ttl in trees if ttl == "-"}
        for _ in range(args.rounds):
            for label, tree, ttl in trees:
                drains[label].append(_drain_sample(tree, server.url, args.n, ttl))
                if label in cpu:
                    cpu[label].append(_drain_sample(tree, "memory", args.n, ttl)["us"])
        cancel = asyncio.run(_cancel_latency(server.url, args.cancels))
        redis_cfg = {
            "redis": {"url": server.url, "key_prefix": "trs" + uuid.uuid4().hex[:8]},
            "message_queue": {"type": "redis", "queue_name": "st"},
            "event_bus": {"enabled": False},
        }
        memory_cfg = {
            "message_queue": {"type": "memory", "queue_name": "st"},
            "event_bus": {"enabled": False},
        }
        status_redis = asyncio.run(_status_rate(redis_cfg, args.status_seconds))
        status_memory = asyncio.run(_status_rate(memory_cfg, args.status_seconds))
    finally:
        server.stop()
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False
        )
    print(f"drain: median of {args.rounds} alternations, n={args.n}, 32 workers, one process")
    print("| tree | drain (msg/s) | drain / bare LPOP 32 (same child) |")
    print("|---|---:|---:|")
    for label, rows in drains.items():
        rate = statistics.median(r["rate"] for r in rows)
        ratio = statistics.median(r["rate"] / r["bare"] for r in rows)
        print(f"| {label} | {rate:,.0f} | {ratio:.3f} |")
    print()
    print(f"memory drain, CPU per message (median of {args.rounds}, n={4 * args.n})")
    print("| tree | CPU per message (us) |")
    print("|---|---:|")
    for label, values in cpu.items():
        print(f"| {label} | {statistics.median(values):.2f} |")
    print()
    print(f"cancel across processes: {args.cancels} cancels of running handlers")
    print("| measure | p50 (ms) | p99 (ms) |")
    print("|---|---:|---:|")
    print(
        f"| cancel() called -> handler got CancelledError (other process) | "
        f"{cancel['stopped_p50']:.2f} | {cancel['stopped_p99']:.2f} |"
    )
    print(
        f"| cancel() call returned | {cancel['returned_p50']:.2f} | "
        f"{cancel['returned_p99']:.2f} |"
    )
    print()
    print(f"status() calls per second ({args.status_seconds:g} s each)")
    print("| backend | message | 1 caller | 32 callers |")
    print("|---|---|---:|---:|")
    for backend, figures in (("redis", status_redis), ("memory", status_memory)):
        for name in ("waiting", "running"):
            print(
                f"| {backend} | {name} | {figures[f'{name}/1']:,.0f} | "
                f"{figures[f'{name}/32']:,.0f} |"
            )


if __name__ == "__main__":
    main()
