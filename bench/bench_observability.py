"""What observability costs: drain throughput with middleware unused, with Prometheus on,
and with Prometheus + OpenTelemetry on (the SDK, a batch span processor exporting to
nowhere), in the same run.

    python bench/bench_observability.py [--runs 5] [--drain 20000] [--baseline DIR]

Starts its own redis-server on a free loopback port. Each (backend, mode, run) executes in
a fresh child process, interleaved, so machine noise hits every mode alike; figures are
medians. The drain is N pre-published no-op messages (published by the same child, with
the same middleware, before the clock starts) consumed by a 32-handler pool, until the
queue's ``processed`` counter has them all.

``--baseline DIR``: the ``unused`` mode again with the meetq of another source tree ahead
on ``sys.path`` (say ``git worktree add /tmp/pre-mw <commit before the middleware>``), so
"unused" is compared with no middleware code at all.

``--before DIR``: every mode again with the meetq of another tree (``git archive main |
tar -x -C DIR``, say), interleaved with this tree's runs: before/after figures of a change
from one run, rows ``mode @before``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import meetq
from meetq import Message
from meetq.testing._redis_server import RedisServer

MODES = ("unused", "prometheus", "prometheus+otel")


def _config(backend: str, url: str) -> dict[str, Any]:
    return {
        "redis": {"url": url, "key_prefix": f"bobs{uuid.uuid4().hex[:8]}"},
        "message_queue": {
            "type": backend,
            "queue_name": "bench",
            "workers": 32,
            "visibility_timeout": 30,
            "poll_interval": 100,
        },
        "event_bus": {"enabled": False},
    }


def _observe(mode: str, qm: meetq.QueueManager) -> None:
    if mode in ("prometheus", "prometheus+otel"):
        from prometheus_client import CollectorRegistry

        from meetq.observability import Metrics

        Metrics(CollectorRegistry()).instrument(qm)
    if mode == "prometheus+otel":
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        from meetq.observability import instrument_tracing

        class Nowhere(SpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Nowhere()))
        instrument_tracing(qm, tracer_provider=provider)


async def _drain(backend: str, url: str, mode: str, count: int) -> tuple[float, float]:
    """Messages per second, and this process's CPU seconds per message (every thread:
    a span processor's too), over the drain."""
    qm = await meetq.initialize_queue_system(_config(backend, url))
    mq = qm.get_message_queue()
    assert mq is not None
    if mode != "baseline":
        _observe(mode, qm)
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

    t0, cpu0 = time.perf_counter(), time.process_time()
    await qm.start()
    await done.wait()
    while (await mq.stats())["total_processed"] < count:  # acks are settled too
        await asyncio.sleep(0.001)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await mq.clear()
    await qm.stop()
    return count / elapsed, cpu / count


def _run_child(backend: str, mode: str, url: str, drain: int, tree: str | None) -> dict[str, Any]:
    """One drain in a fresh child; ``tree``: another source tree's meetq first on the path."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
    args = ["--child", backend, "--mode", mode, "--url", url, "--drain", str(drain)]
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True, env=env
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--drain", type=int, default=20_000)
    parser.add_argument("--baseline", metavar="DIR")
    parser.add_argument("--before", metavar="DIR")
    parser.add_argument("--backends", default="memory,redis")
    parser.add_argument("--child")
    parser.add_argument("--mode")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        rate, cpu = asyncio.run(_drain(args.child, args.url, args.mode, args.drain))
        print(json.dumps({"drain": rate, "cpu": cpu, "meetq": os.path.dirname(meetq.__file__)}))
        return
    for option, tree in (("--baseline", args.baseline), ("--before", args.before)):
        if tree and not os.path.isfile(os.path.join(tree, "meetq", "__init__.py")):
            parser.error(f"{option} {tree}: no meetq/__init__.py there")
    # (row name, mode, tree): this tree's modes, and the other trees' interleaved.
    rows = [
        *([("baseline", "baseline", args.baseline)] if args.baseline else []),
        *((mode, mode, None) for mode in MODES),
        *((f"{mode} @before", mode, args.before) for mode in MODES if args.before),
    ]
    backends = args.backends.split(",")
    results: dict[tuple[str, str], list[float]] = {(b, r[0]): [] for b in backends for r in rows}
    cpu: dict[tuple[str, str], list[float]] = {key: [] for key in results}
    with RedisServer() as server:
        for _ in range(args.runs):
            for backend in backends:
                for row, mode, tree in rows:
                    figure = _run_child(backend, mode, server.url, args.drain, tree)
                    if tree is not None:
                        assert figure["meetq"].startswith(os.path.abspath(tree))
                    results[(backend, row)].append(figure["drain"])
                    cpu[(backend, row)].append(figure["cpu"])
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}; median of "
        f"{args.runs} interleaved runs; drain={args.drain:,} no-op messages, worker pool 32"
        + (f"; baseline: meetq of {args.baseline}" if args.baseline else "")
        + (f"; @before: meetq of {args.before}" if args.before else "")
        + "; cpu: the worker process's CPU µs per message (all its threads)"
    )
    print(
        f"| {'mode':<24} | "
        + " | ".join(
            f"{b + ' msg/s':>14} | {'vs unused':>9} | {'cpu µs':>6} | {'vs':>7}" for b in backends
        )
        + " |"
    )
    print("|" + "---|" + "---:|" * (4 * len(backends)))
    for row, _mode, _tree in rows:
        reference = "unused @before" if row.endswith(" @before") else "unused"
        cells = []
        for backend in backends:
            med = statistics.median(results[(backend, row)])
            ref = statistics.median(results[(backend, reference)])
            used = statistics.median(cpu[(backend, row)]) * 1e6
            base = statistics.median(cpu[(backend, reference)]) * 1e6
            cells.append(
                f"{med:>14,.0f} | {(med / ref - 1) * 100:>+8.1f}% | {used:>6.1f} | "
                f"{(used / base - 1) * 100:>+6.1f}%"
            )
        print(f"| {row:<24} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
