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


async def _drain(backend: str, url: str, mode: str, count: int) -> float:
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

    t0 = time.perf_counter()
    await qm.start()
    await done.wait()
    while (await mq.stats())["total_processed"] < count:  # acks are settled too
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - t0
    await mq.clear()
    await qm.stop()
    return count / elapsed


def _run_child(
    backend: str, mode: str, url: str, drain: int, baseline: str | None
) -> dict[str, Any]:
    env = dict(os.environ)
    if mode == "baseline":
        assert baseline is not None
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [baseline, env.get("PYTHONPATH")]))
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
    parser.add_argument("--backends", default="memory,redis")
    parser.add_argument("--child")
    parser.add_argument("--mode")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        rate = asyncio.run(_drain(args.child, args.url, args.mode, args.drain))
        print(json.dumps({"drain": rate, "meetq": os.path.dirname(meetq.__file__)}))
        return
    if args.baseline and not os.path.isfile(os.path.join(args.baseline, "meetq", "__init__.py")):
        parser.error(f"--baseline {args.baseline}: no meetq/__init__.py there")
    modes = [*(["baseline"] if args.baseline else []), *MODES]
    backends = args.backends.split(",")
    results: dict[tuple[str, str], list[float]] = {(b, m): [] for b in backends for m in modes}
    with RedisServer() as server:
        for _ in range(args.runs):
            for backend in backends:
                for mode in modes:
                    figure = _run_child(backend, mode, server.url, args.drain, args.baseline)
                    if mode == "baseline":
                        assert figure["meetq"].startswith(os.path.abspath(args.baseline))
                    results[(backend, mode)].append(figure["drain"])
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}; median of "
        f"{args.runs} interleaved runs; drain={args.drain:,} no-op messages, worker pool 32"
        + (f"; baseline: meetq of {args.baseline}" if args.baseline else "")
    )
    print(
        f"| {'mode':<22} | "
        + " | ".join(f"{b + ' msg/s':>14} | {'vs unused':>9}" for b in backends)
        + " |"
    )
    print("|" + "---|" * (1 + 2 * len(backends)))
    for mode in modes:
        cells = []
        for backend in backends:
            med = statistics.median(results[(backend, mode)])
            ref = statistics.median(results[(backend, "unused")])
            cells.append(f"{med:>14,.0f} | {(med / ref - 1) * 100:>+8.1f}%")
        print(f"| {mode:<22} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
