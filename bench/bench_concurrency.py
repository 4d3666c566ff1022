"""Many tasks at once on one process: concurrent publishers, I/O-bound async handlers.

    python bench/bench_concurrency.py [--runs 3] [--tree NAME=DIR ...] [--only latency,...]

Starts its own redis-server on a free loopback port. Every sample is a fresh child
process; with ``--tree`` the meetq rows run again with ``DIR/meetq`` first on
``PYTHONPATH`` (a ``git worktree`` of an earlier commit: before and after in one run),
trees interleaved within each run. Figures are medians over the runs. Measured, every
meetq row at the default config (only ``message_queue.type: redis``, the URL and a fresh
key prefix set):

- ``publish xN``: 20,000 publishes by N concurrent tasks (``asyncio.gather``, each task
  publishing 20,000/N one after another): msg/s and how many raised;
- ``RPUSH pipelined``: the same 20,000 items as one redis-py pipeline of RPUSH (the
  ceiling for one client process), and ``RPUSH xN``: N tasks each awaiting RPUSH;
- ``sleep 10ms``: 5,000 pre-published jobs whose async handler awaits
  ``asyncio.sleep(0.01)``, drained by one worker process: jobs/s (start to the last
  ack); ``workers=4`` repeats it with the guide's explicit setting;
- ``latency``: 3,000 publishes one at a time (awaiting each), p50/p99 in microseconds;
  ``RPUSH latency`` the same for redis-py's awaited ``RPUSH`` of the same payloads (the
  bare round trip the publish latency is compared with, in the same run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

TOTAL = 20_000
JOBS = 5_000
LATENCY_SAMPLES = 3_000


def _config(url: str, **queue: Any) -> dict[str, Any]:
    return {
        "redis": {"url": url, "key_prefix": f"bc{uuid.uuid4().hex[:8]}"},
        "message_queue": {"type": "redis", "queue_name": "bench", **queue},
        "event_bus": {"enabled": False},
        "task_dispatcher": {"enabled": False},
    }


async def _publishers(url: str, tasks: int) -> dict[str, float]:
    import meetq
    from meetq import Message

    qm = await meetq.initialize_queue_system(_config(url))
    mq = qm.get_message_queue()
    assert mq is not None
    await mq.publish(Message(type="noop"))  # connection and script loaded
    errors: list[BaseException] = []
    messages = [Message(type="noop", payload={"i": i}) for i in range(TOTAL)]
    per = TOTAL // tasks

    async def publisher(part: list[Any]) -> None:
        for message in part:
            try:
                await mq.publish(message)
            except Exception as exc:
                errors.append(exc)

    start = time.perf_counter()
    await asyncio.gather(*(publisher(messages[i * per : (i + 1) * per]) for i in range(tasks)))
    elapsed = time.perf_counter() - start
    stored = await mq.queue_length()
    await mq.clear()
    await qm.stop()
    first = repr(errors[0])[:120] if errors else ""
    return {"rate": TOTAL / elapsed, "errors": len(errors), "stored": stored - 1, "first": first}


async def _sleep_drain(url: str, workers: int | None) -> dict[str, float]:
    import meetq
    from meetq import Message

    queue = {} if workers is None else {"workers": workers}
    qm = await meetq.initialize_queue_system(_config(url, **queue))
    mq = qm.get_message_queue()
    assert mq is not None
    done = asyncio.Event()
    count = 0

    @mq.handler("io")
    async def io(msg: Message) -> None:
        nonlocal count
        await asyncio.sleep(0.01)
        count += 1
        if count == JOBS:
            done.set()

    for _ in range(JOBS // 500):
        await mq.publish_batch([Message(type="io") for _i in range(500)])
    start = time.perf_counter()
    await mq.start()
    await asyncio.wait_for(done.wait(), 300)
    # The last ack: its exchange settles it; wait until the queue says so.
    while (await mq.stats())["total_processed"] < JOBS:
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - start
    await qm.stop()
    return {"rate": JOBS / elapsed}


async def _latency(url: str) -> dict[str, float]:
    import meetq
    from meetq import Message

    qm = await meetq.initialize_queue_system(_config(url))
    mq = qm.get_message_queue()
    assert mq is not None
    messages = [Message(type="noop", payload={"i": i}) for i in range(LATENCY_SAMPLES + 200)]
    spans = []
    for i, message in enumerate(messages):
        start = time.perf_counter_ns()
        await mq.publish(message)
        if i >= 200:  # warm-up
            spans.append(time.perf_counter_ns() - start)
    spans.sort()
    await mq.clear()
    await qm.stop()
    return {
        "p50": spans[len(spans) // 2] / 1000,
        "p99": spans[int(len(spans) * 0.99)] / 1000,
    }


async def _bare_latency(url: str) -> dict[str, float]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    key = f"bare{uuid.uuid4().hex[:8]}"
    items = [json.dumps({"i": i}) for i in range(LATENCY_SAMPLES + 200)]
    await client.ping()
    spans = []
    for i, item in enumerate(items):
        start = time.perf_counter_ns()
        await client.rpush(key, item)
        if i >= 200:  # warm-up, as for the publish latency
            spans.append(time.perf_counter_ns() - start)
    spans.sort()
    await client.delete(key)
    await client.aclose()
    return {
        "p50": spans[len(spans) // 2] / 1000,
        "p99": spans[int(len(spans) * 0.99)] / 1000,
    }


async def _bare(url: str, tasks: int) -> dict[str, float]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    key = f"bare{uuid.uuid4().hex[:8]}"
    items = [json.dumps({"i": i}) for i in range(TOTAL)]
    await client.ping()
    if tasks == 0:
        start = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for item in items:
            pipe.rpush(key, item)
        await pipe.execute()
    else:
        per = TOTAL // tasks

        async def pusher(part: list[str]) -> None:
            for item in part:
                await client.rpush(key, item)

        start = time.perf_counter()
        await asyncio.gather(*(pusher(items[i * per : (i + 1) * per]) for i in range(tasks)))
    elapsed = time.perf_counter() - start
    await client.delete(key)
    await client.aclose()
    return {"rate": TOTAL / elapsed, "errors": 0}


def _child(kind: str, url: str) -> dict[str, Any]:
    name, _, arg = kind.partition(":")
    if name == "publish":
        return asyncio.run(_publishers(url, int(arg)))
    if name == "sleep":
        return asyncio.run(_sleep_drain(url, int(arg) if arg else None))
    if name == "latency":
        return asyncio.run(_latency(url))
    if name == "bare":
        return asyncio.run(_bare(url, int(arg)) if arg else _bare_latency(url))
    raise SystemExit(f"unknown kind {kind!r}")


def _run(kind: str, url: str, tree: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (tree, env.get("PYTHONPATH")) if p)
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--url", url],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=900,
    )
    if out.returncode:
        return {"failed": out.stderr.strip().splitlines()[-1] if out.stderr else "?"}
    result: dict[str, Any] = json.loads(out.stdout)
    return result


MEETQ_KINDS = ("publish:100", "publish:1000", "sleep:", "sleep:4", "latency:")
BARE_KINDS = ("bare:0", "bare:100", "bare:1000", "bare:")
LATENCY_KINDS = ("latency:", "bare:")
LABELS = {
    "publish:100": "publish x100",
    "publish:1000": "publish x1000",
    "sleep:": "sleep 10ms, default",
    "sleep:4": "sleep 10ms, workers=4",
    "latency:": "publish latency (us)",
    "bare:0": "RPUSH pipelined (redis-py)",
    "bare:100": "RPUSH x100 (redis-py)",
    "bare:1000": "RPUSH x1000 (redis-py)",
    "bare:": "RPUSH latency (us, redis-py)",
}


def _cell(samples: list[dict[str, Any]], kind: str) -> str:
    failed = [s["failed"] for s in samples if "failed" in s]
    good = [s for s in samples if "failed" not in s]
    if not good:
        return f"failed: {failed[0][:60]}"
    if kind in LATENCY_KINDS:
        p50 = statistics.median(s["p50"] for s in good)
        p99 = statistics.median(s["p99"] for s in good)
        return f"p50 {p50:.0f} / p99 {p99:.0f}"
    rate = statistics.median(s["rate"] for s in good)
    text = f"{rate:,.0f}/s"
    if "errors" in good[0]:
        errors = sum(int(s["errors"]) for s in good)
        text += f", {errors} errors"
        if errors:
            text += f" ({next(s['first'] for s in good if s['errors'])[:50]})"
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tree", action="append", default=[], help="NAME=DIR")
    parser.add_argument("--only", default="", help="rows to run: publish,sleep,latency,bare")
    parser.add_argument("--child")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.url)))
        return
    from meetq.testing import RedisServer

    trees: list[tuple[str, str | None]] = [("this tree", None)]
    for spec in args.tree:
        name, _, path = spec.partition("=")
        trees.append((name, os.path.abspath(path)))
    wanted = set(filter(None, args.only.split(",")))
    meetq_kinds = [k for k in MEETQ_KINDS if not wanted or k.split(":")[0] in wanted]
    bare_kinds = [k for k in BARE_KINDS if not wanted or "bare" in wanted]
    if "latency" in wanted and "bare:" not in bare_kinds:
        bare_kinds.append("bare:")  # a latency is read next to the bare round trip's
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with RedisServer() as server:
        for _ in range(args.runs):
            for kind in meetq_kinds:
                for name, path in trees:
                    samples.setdefault((kind, name), []).append(_run(kind, server.url, path))
            for kind in bare_kinds:
                samples.setdefault((kind, "-"), []).append(_run(kind, server.url, None))
    width = max(len(label) for label in LABELS.values())
    names = [name for name, _ in trees]
    print(f"{args.runs} runs, medians; python {sys.version.split()[0]}")
    print(f"{'':{width}} | " + " | ".join(f"{n:34}" for n in names))
    for kind in meetq_kinds:
        cells = [_cell(samples[(kind, n)], kind) for n in names]
        print(f"{LABELS[kind]:{width}} | " + " | ".join(f"{c:34}" for c in cells))
    for kind in bare_kinds:
        print(f"{LABELS[kind]:{width}} | {_cell(samples[(kind, '-')], kind)}")


if __name__ == "__main__":
    main()
