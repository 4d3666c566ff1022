"""TracingMiddleware on memory: spans in one process with the SDK's in-memory exporter
(a handler's own span nests under the process span); a no-op without opentelemetry-api."""

from __future__ import annotations

import sys
from typing import Any

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


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_pubsub_send_and_process_spans_carry_the_context_in_the_headers() -> None:
    from opentelemetry.trace import SpanKind

    from meetq import PubSub, PubSubMessage

    provider, exporter = _provider()
    pubsub = PubSub(MemoryBackend(), namespace="tr")
    assert instrument_tracing(pubsub, tracer_provider=provider) is not None
    tracer = provider.get_tracer("user")
    got: list[PubSubMessage] = []

    async def handle(message: PubSubMessage) -> None:
        got.append(message)
        with tracer.start_as_current_span("inside"):
            pass
        if message.type == "bad":
            raise ValueError("no")

    async with pubsub:
        await pubsub.subscribe("news", handle)
        await pubsub.psubscribe("alerts.*", handle)
        await pubsub.publish("news", PubSubMessage(type="good"))
        await pubsub.publish("alerts.fire", PubSubMessage(type="bad"))
        await eventually(lambda: len(exporter.get_finished_spans()) == 6)
    spans = exporter.get_finished_spans()
    by_name = {span.name: span for span in spans}
    send, process = by_name["send news"], by_name["process news"]
    assert (send.kind, process.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    assert "traceparent" in got[0].headers
    assert send.context is not None and process.context is not None
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    inside = [s for s in spans if s.name == "inside"]
    assert {s.parent.span_id for s in inside if s.parent} == {
        by_name["process news"].context.span_id,
        by_name["process alerts.fire"].context.span_id,  # type: ignore[union-attr]
    }
    assert process.attributes is not None and send.attributes is not None
    assert process.attributes["messaging.destination.name"] == "news"
    assert process.attributes["messaging.message.id"] == got[0].id
    assert process.attributes["messaging.meetq.outcome"] == "ack"
    assert send.attributes["messaging.operation.type"] == "send"
    alert = by_name["process alerts.fire"]
    assert alert.attributes is not None
    assert alert.attributes["messaging.meetq.subscription"] == "alerts.*"
    assert alert.attributes["messaging.meetq.outcome"] == "dropped"
    assert not alert.status.is_ok


async def test_dispatcher_trace_runs_from_dispatch_to_the_result_report() -> None:
    from meetq import TaskDispatcher, TaskRequest

    provider, exporter = _provider()
    mq = MessageQueue(MemoryBackend(), queue_name="tasks", poll_interval=0.05)
    dispatcher = TaskDispatcher(mq, service_name="svc")
    tracer = provider.get_tracer("user")

    @dispatcher.task("resize")
    async def resize(task: Any) -> dict[str, int]:
        with tracer.start_as_current_span("resizing"):
            return {"w": 1}

    assert instrument_tracing(dispatcher, mq, tracer_provider=provider) is not None
    assert len(mq._middleware.middleware) == 1  # reached twice, traced once
    async with mq, dispatcher:
        sent = await dispatcher.dispatch_task(TaskRequest(type="resize"))
        done = await dispatcher.wait(sent.task_id, timeout=10)
        await eventually(lambda: _named(exporter, "resizing"))
    assert done.result == {"w": 1}
    spans = exporter.get_finished_spans()
    (send_task,) = _of(spans, "send tasks", "resize@svc")
    (process_task,) = _of(spans, "process tasks", "resize@svc")
    (resizing,) = [s for s in spans if s.name == "resizing"]
    assert send_task.context is not None and process_task.context is not None
    assert [link.context.span_id for link in process_task.links] == [send_task.context.span_id]
    assert resizing.parent is not None and resizing.parent.span_id == process_task.context.span_id
    # Each status report is sent inside the task's process span, and processed, linked
    # to that send, by the dispatching side.
    reports = _of(spans, "send tasks", dispatcher.reply_to)
    assert reports
    for report in reports:
        assert report.parent is not None and report.parent.span_id == process_task.context.span_id
    handled = _of(spans, "process tasks", dispatcher.reply_to)
    linked = [link.context.span_id for s in handled for link in s.links]
    assert sorted(linked) == sorted(r.context.span_id for r in reports if r.context)


def _of(spans: Any, name: str, message_type: str) -> list[Any]:
    key = "messaging.meetq.message_type"
    return [s for s in spans if s.name == name and (s.attributes or {}).get(key) == message_type]


def _named(exporter: InMemorySpanExporter, name: str) -> bool:
    return any(span.name == name for span in exporter.get_finished_spans())


async def test_a_propagator_that_writes_nothing_leaves_the_headers_alone() -> None:
    from opentelemetry import propagate
    from opentelemetry.propagators.composite import CompositePropagator

    provider, exporter = _provider()
    mq = MessageQueue(MemoryBackend(), queue_name="tq", poll_interval=0.05)
    instrument_tracing(mq, tracer_provider=provider)
    seen: list[Message] = []
    mq.handler("job")(seen.append)
    configured = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator([]))
    try:
        await mq.publish(Message(type="job", headers={"mine": "1"}))
        async with mq:
            await eventually(lambda: _named(exporter, "process tq"))
    finally:
        propagate.set_global_textmap(configured)
    assert seen[0].headers == {"mine": "1"}
    assert [s.name for s in exporter.get_finished_spans()] == ["send tq", "process tq"]
    assert exporter.get_finished_spans()[1].links == ()
