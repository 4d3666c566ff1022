"""One side of the cross-process tracing test, with the OpenTelemetry SDK's in-memory
exporter; writes its finished spans as JSON to OUT and prints ``DONE <message id>``.

argv: produce|consume redis_url key_prefix queue_name OUT
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import meetq
from meetq import Message
from meetq.observability import instrument_tracing


def _span(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": context.trace_id,
        "span_id": context.span_id,
        "parent": span.parent.span_id if span.parent is not None else None,
        "links": [[link.context.trace_id, link.context.span_id] for link in span.links],
        "attributes": dict(span.attributes or {}),
    }


class _Signalling(SimpleSpanProcessor):
    """Sets ``ended`` once a span is exported (on the loop: spans end in the hooks)."""

    def __init__(self, exporter: InMemorySpanExporter, ended: asyncio.Event) -> None:
        super().__init__(exporter)
        self.ended = ended

    def on_end(self, span: ReadableSpan) -> None:
        super().on_end(span)
        self.ended.set()


async def main(role: str, url: str, prefix: str, queue_name: str) -> tuple[str, list[Any]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    ended = asyncio.Event()
    provider.add_span_processor(_Signalling(exporter, ended))
    qm = await meetq.initialize_queue_system({
        "redis": {"url": url, "key_prefix": prefix},
        "message_queue": {"type": "redis", "queue_name": queue_name, "poll_interval": "50ms"},
        "event_bus": {"enabled": False},
    })
    mq = qm.get_message_queue()
    assert mq is not None
    assert instrument_tracing(qm, tracer_provider=provider) is not None
    done: list[str] = []
    if role == "produce":
        done.append(await mq.publish(Message(type="job", payload={"n": 1})))
    else:
        @mq.handler("job")
        async def job(msg: Message) -> None:
            done.append(msg.id)

        async with qm:
            await asyncio.wait_for(ended.wait(), 30)  # the process span ends after the handler
    await qm.stop()
    return done[0], [_span(s) for s in exporter.get_finished_spans()]


if __name__ == "__main__":
    message_id, spans = asyncio.run(main(*sys.argv[1:5]))
    with open(sys.argv[5], "w") as f:
        json.dump(spans, f)
    print(f"DONE {message_id}", flush=True)
