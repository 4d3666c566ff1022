"""Where the per-message time of observability goes: the middleware hooks alone, in a loop.

    python bench/profile_observability.py [--mode prometheus|prometheus+otel] [--messages N]

Runs ``before_process`` / ``after_process`` of a ``MessageQueue``'s middleware chain (as a
delivery does, with a ``Delivery`` built the way the queue builds it) over N messages
that went through ``before_publish`` (so they carry a ``traceparent``), first timed (best
of several loops, µs per message), then under cProfile, and prints the share of the
profiled time by owner: meetq's chain, its Prometheus recorder and tracing middleware,
the OpenTelemetry API (propagator, context, attribute checks) and SDK (span, sampler,
processor). The time of a builtin or stdlib call goes to the owner of its caller.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import timeit
from collections.abc import Sequence
from typing import Any

from meetq import Message
from meetq.core.middleware import Delivery, MiddlewareChain


def _chain(mode: str) -> MiddlewareChain:
    from meetq.observability._prometheus import _QueueRecorder

    chain = MiddlewareChain("bench")
    chain.add(_QueueRecorder())  # what Metrics.instrument() adds to a queue
    if mode == "prometheus+otel":
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        from meetq.observability import TracingMiddleware

        class Nowhere(SpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Nowhere()))
        chain.add(TracingMiddleware(provider))
    return chain


def _owner(filename: str) -> str | None:
    for part, name in (
        ("opentelemetry/sdk", "OpenTelemetry SDK (span, sampler, processor)"),
        ("opentelemetry", "OpenTelemetry API (propagator, context, attribute checks)"),
        ("meetq/observability/_tracing", "meetq TracingMiddleware"),
        ("meetq/observability/_prometheus", "meetq Prometheus recorder"),
        ("meetq/core/middleware", "meetq MiddlewareChain"),
        ("profile_observability", "this loop (Delivery objects)"),
    ):
        if part in filename:
            return name
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", default="prometheus+otel")
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    chain = _chain(args.mode)
    messages = []
    for i in range(args.messages):
        message = chain.before_publish("bench", Message(type="noop", payload={"i": i}))
        chain.after_publish("bench", message, message.id, None)
        messages.append(message)

    def run() -> None:
        for message in messages:
            delivery = Delivery("bench", "worker", message, 1)
            chain.before_process(delivery)
            chain.after_process(delivery, "ack", None)

    best = min(timeit.repeat(run, number=1, repeat=15)) / len(messages)
    print(f"{args.mode}: {best * 1e6:.2f} µs a message in the hooks (best of 15 loops)")
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(5):
        run()
    profile.disable()
    stats: Any = pstats.Stats(profile).stats
    shares: dict[str, float] = {}
    for (filename, _, _), (_, _, own, _, callers) in stats.items():
        owner = _owner(filename)
        if owner is not None:
            shares[owner] = shares.get(owner, 0.0) + own
            continue
        calls = {c: v[1] if isinstance(v, tuple) else v for c, v in callers.items()}
        total = sum(calls.values()) or 1
        for caller, n in calls.items():
            to = _owner(caller[0]) or "stdlib called from stdlib"
            shares[to] = shares.get(to, 0.0) + own * n / total
    whole = sum(shares.values())
    print("| owner | share of the profiled time |\n|---|---:|")
    for owner, seconds in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"| {owner} | {seconds / whole * 100:.0f}% |")


if __name__ == "__main__":
    main()
