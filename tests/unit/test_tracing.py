"""TracingMiddleware on memory: spans in one process with the SDK's in-memory exporter
(a handler's own span nests under the process span); a no-op without opentelemetry-api."""

from __future__ import annotations

import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meetq import Message, MessageQueue, MissingDependencyError
from meetq.backends.memory._backend import MemoryBackend
from meetq.observability import TracingMiddleware, instrument_tracing
from meetq.testing import eventually


async def test_send_and_process_spans_and_a_nested_handler_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    mq = MessageQueue(MemoryBackend(), queue_name="tq", poll_interval=0.05, max_retries=0)
    assert instrument_tracing(mq, tracer_provider=provider) is not None
    tracer = provider.get_tracer("user")
    seen: list[Message] = []

    @mq.handler("job")
    async def job(message: Message) -> None:
        seen.append(message)
        with tracer.start_as_current_span("inside"):
            pass
        raise RuntimeError("fails")

    sent = await mq.publish(Message(type="job"))
    async with mq:
        await eventually(lambda: len(exporter.get_finished_spans()) == 3)
    by_name = {span.name: span for span in exporter.get_finished_spans()}
    send, process, inside = by_name["send tq"], by_name["process tq"], by_name["inside"]
    assert "traceparent" in seen[0].headers
    assert send.context is not None and process.context is not None
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert inside.parent is not None and inside.parent.span_id == process.context.span_id
    assert process.attributes is not None
    assert process.attributes["messaging.message.id"] == sent
    assert process.attributes["messaging.meetq.outcome"] == "dead"
    assert not process.status.is_ok


def test_without_opentelemetry_tracing_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("opentelemetry", "opentelemetry.trace"):
        monkeypatch.setitem(sys.modules, name, None)
    mq = MessageQueue(MemoryBackend(), queue_name="tq")
    assert instrument_tracing(mq) is None
    assert mq._middleware.middleware == ()
    with pytest.raises(MissingDependencyError, match=r"pip install 'meetq\[otel\]'"):
        TracingMiddleware()
