"""What observability costs: drain throughput with middleware unused, with Prometheus on,
and with Prometheus + OpenTelemetry on (the SDK, a batch span processor exporting to
nowhere), in the same run.

    python bench/bench_observability.py [--runs 5] [--drain 20000] [--baseline DIR]
                                        [--handler noop|io|cpu] [--workers N] [--spans N]

Starts its own redis-server on a free loopback port. Each (backend, mode, run) executes in
a fresh child process, interleaved, so machine noise hits every mode alike; figures are
medians. The drain is N pre-published no-op messages (published by the same child, with
the same middleware, before the clock starts) consumed by a 32-handler pool, until the
queue's ``processed`` counter has them all.

``--handler``: what each handler does. ``noop`` (the default) returns at once, with a
32-handler pool; ``io`` awaits ``asyncio.sleep(0.001)`` (1 ms of awaited I/O) and ``cpu``
runs a small CPU job (``CPU_ROUNDS`` JSON round trips of a 1 KB payload, timed and printed
at start), both at meetq's default concurrency (``workers`` unset: 100 async handlers).
``--workers N`` sets the pool (0: the default).

``--spans N``: also time N spans of the OpenTelemetry SDK alone (no meetq): a
``tracer.start_as_current_span`` with the process span's attributes and a link, on a
provider with a batch span processor exporting to nowhere (flushed every 1,000 spans, so
none is dropped); printed in CPU µs per span, next to the per-message figures.

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
HANDLERS = ("noop", "io", "cpu")
CPU_ROUNDS = 5
PAYLOAD_1K = {"items": [{"id": i, "name": f"item-{i:04d}", "ok": i % 2 == 0} for i in range(24)]}


def _cpu_job() -> None:
    for _ in range(CPU_ROUNDS):
        json.loads(json.dumps(PAYLOAD_1K))


def _config(backend: str, url: str, workers: int | None) -> dict[str, Any]:
    return {
        "redis": {"url": url, "key_prefix": f"bobs{uuid.uuid4().hex[:8]}"},
        "message_queue": {
            "type": backend,
            "queue_name": "bench",
            "workers": workers,
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
        from meetq.observability import instrument_tracing

        instrument_tracing(qm, tracer_provider=_nowhere_provider())


def _nowhere_provider() -> Any:
    """An SDK tracer provider with a batch span processor exporting to nowhere."""
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Nowhere(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Nowhere()))
    return provider


def _sdk_spans(count: int) -> dict[str, float]:
    """CPU µs per span of the SDK alone (no meetq; this process, its span processor's
    thread too): ``start_as_current_span`` with a process span's nine attributes and one
    link, and a bare ``start_span`` + ``end``."""
    from opentelemetry import trace

    provider = _nowhere_provider()
    tracer = trace.get_tracer("bench", tracer_provider=provider)
    sent = tracer.start_span("send bench")
    link = trace.Link(sent.get_span_context())
    attributes: dict[str, Any] = {
        "messaging.system": "meetq",
        "messaging.destination.name": "bench",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": uuid.uuid4().hex,
        "messaging.meetq.message_type": "noop",
        "messaging.meetq.priority": "normal",
        "messaging.meetq.attempt": 1,
        "messaging.meetq.worker": "host:1",
    }
    consumer = trace.SpanKind.CONSUMER
    count = max(1000, count - count % 1000)
    out: dict[str, float] = {}
    t0 = time.process_time()
    for _ in range(0, count, 1000):  # flushed every 1,000: the batch queue never drops one
        for _ in range(1000):
            with tracer.start_as_current_span(
                "process bench", kind=consumer, links=[link], attributes=attributes
            ):
                pass
        provider.force_flush()
    out["current"] = (time.process_time() - t0) / count * 1e6
    t0 = time.process_time()
    for _ in range(0, count, 1000):
        for _ in range(1000):
            tracer.start_span("process bench").end()
        provider.force_flush()
    out["bare"] = (time.process_time() - t0) / count * 1e6
    provider.shutdown()
    return out


async def _drain(
    backend: str, url: str, mode: str, count: int, handler: str, workers: int | None
) -> tuple[float, float]:
    """Messages per second, and this process's CPU seconds per message (every thread:
    a span processor's too), over the drain."""
    qm = await meetq.initialize_queue_system(_config(backend, url, workers))
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

    async def noop(msg: Message) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    async def on_io(msg: Message) -> None:
        await asyncio.sleep(0.001)
        await noop(msg)

    async def on_cpu(msg: Message) -> None:
        _cpu_job()
        await noop(msg)

    mq.handler("noop")({"noop": noop, "io": on_io, "cpu": on_cpu}[handler])

    t0, cpu0 = time.perf_counter(), time.process_time()
    await qm.start()
    await done.wait()
    while (await mq.stats())["total_processed"] < count:  # acks are settled too
        await asyncio.sleep(0.001)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await mq.clear()
    await qm.stop()
    return count / elapsed, cpu / count


def _run_child(
    backend: str, mode: str, url: str, drain: int, tree: str | None, handler: str, workers: int
) -> dict[str, Any]:
    """One drain in a fresh child; ``tree``: another source tree's meetq first on the path."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
    args = ["--child", backend, "--mode", mode, "--url", url, "--drain", str(drain)]
    args += ["--handler", handler, "--workers", str(workers)]
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
    parser.add_argument("--handler", choices=HANDLERS, default="noop")
    parser.add_argument("--spans", type=int, default=0, metavar="N")
    parser.add_argument("--workers", type=int, default=-1, help="handlers at once (0: default)")
    parser.add_argument("--child")
    parser.add_argument("--mode")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.workers < 0:
        args.workers = 32 if args.handler == "noop" else 0
    if args.child:
        workers = args.workers or None
        rate, cpu = asyncio.run(
            _drain(args.child, args.url, args.mode, args.drain, args.handler, workers)
        )
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
                    figure = _run_child(
                        backend, mode, server.url, args.drain, tree, args.handler, args.workers
                    )
                    if tree is not None:
                        assert figure["meetq"].startswith(os.path.abspath(tree))
                    results[(backend, row)].append(figure["drain"])
                    cpu[(backend, row)].append(figure["cpu"])
    pool = f"worker pool {args.workers}" if args.workers else "default concurrency (100)"
    job = ""
    if args.handler == "cpu":
        t0 = time.process_time()
        for _ in range(1000):
            _cpu_job()
        job = f" (the job alone: {(time.process_time() - t0) * 1000:.0f} CPU µs)"
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}; median of "
        f"{args.runs} interleaved runs; drain={args.drain:,} messages, handler "
        f"{args.handler}{job}, {pool}"
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
    if args.spans:
        sdk = [_sdk_spans(args.spans) for _ in range(args.runs)]
        current = statistics.median(run["current"] for run in sdk)
        bare = statistics.median(run["bare"] for run in sdk)
        print(
            f"OpenTelemetry SDK alone (no meetq), median of {args.runs} x {args.spans:,} spans: "
            f"start_as_current_span with 9 attributes and a link {current:.1f} CPU µs/span; "
            f"bare start_span + end {bare:.1f} CPU µs/span"
        )


if __name__ == "__main__":
    main()
