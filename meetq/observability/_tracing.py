"""OpenTelemetry spans for meetq (the ``otel`` extra: ``pip install 'meetq[otel]'``, the API
only; the application installs and configures the SDK and its exporter).

Design (why it looks like this):

- Built on middleware (``meetq.core.middleware``), after the messaging semantic
  conventions: ``send {queue}`` (PRODUCER) around a publish, ``process {queue}``
  (CONSUMER) around a delivery, with ``messaging.system="meetq"``,
  ``messaging.destination.name``, ``messaging.operation.type``, ``messaging.message.id``
  and meetq's own ``messaging.meetq.*`` (priority, attempt, message type, outcome).
- The trace context travels in ``Message.headers`` (``traceparent``/``tracestate``, through
  the globally configured propagator): ``before_publish`` returns the message with them
  added. The process span *links* to the send span rather than being its child: a
  message may be processed long after, and more than once, and the conventions say so.
- The process span is the current span while an ``async`` handler runs (the hooks run in
  the delivery's own task), so the handler's own spans nest under it.
- Without opentelemetry-api installed, ``instrument_tracing`` does nothing and returns
  None; ``TracingMiddleware()`` raises ``MissingDependencyError`` saying what to install.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs

from meetq.broadcast._pubsub import PubSub
from meetq.core.errors import MissingDependencyError, ValidationError
from meetq.core.middleware import Broadcast, Delivery, Outcome
from meetq.core.types import Message, Priority, PubSubMessage
from meetq.dispatch._dispatcher import TaskDispatcher
from meetq.manager._manager import QueueManager
from meetq.queue._message_queue import MessageQueue

__all__ = ["TracingMiddleware", "instrument_tracing", "tracing_available"]

INSTALL = "pip install 'meetq[otel]'"
SYSTEM = "meetq"

_PRIORITY_NAMES = {int(p): p.name.lower() for p in Priority}

M = TypeVar("M", Message, PubSubMessage)


def tracing_available() -> bool:
    """Whether opentelemetry-api can be imported."""
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


class TracingMiddleware:
    """Middleware that makes the send and process spans (the module doc says which).

    ``tracer_provider`` defaults to the global one (``trace.set_tracer_provider``).
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import propagate, trace
            from opentelemetry.trace import Link, SpanKind, Status, StatusCode
        except ImportError:
            raise MissingDependencyError(
                "otel", "opentelemetry-api", INSTALL, feature="meetq's OpenTelemetry tracing"
            ) from None
        from opentelemetry import context as otel_context

        self._trace = trace
        self._propagate = propagate
        self._context = otel_context
        self._link = Link
        self._producer = SpanKind.PRODUCER
        self._consumer = SpanKind.CONSUMER
        self._status = Status
        self._error_code = StatusCode.ERROR
        self._tracer = trace.get_tracer("meetq", tracer_provider=tracer_provider)
        self._attach = otel_context.attach
        self._set_span_in_context = trace.set_span_in_context
        self._textmap: Any = None  # the propagator whose fields _fields holds
        self._fields: frozenset[str] = frozenset()
        # Send spans between before_publish and after_publish, by (queue, message id).
        self._sending: dict[tuple[str, str], Any] = {}

    def before_publish(self, queue: str, message: M) -> M:
        """``queue`` is the channel when ``message`` is a ``PubSubMessage``."""
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.destination.name": queue,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.message.id": message.id,
            "messaging.meetq.message_type": message.type,
        }
        if isinstance(message, Message):
            attributes["messaging.meetq.priority"] = _PRIORITY_NAMES[message.priority]
        span = self._tracer.start_span(f"send {queue}", kind=self._producer, attributes=attributes)
        self._sending[(queue, message.id)] = span
        textmap = self._propagator()
        if not self._fields:  # a propagator that writes nothing: the message stays as is
            return message
        headers = dict(message.headers)
        textmap.inject(headers, context=self._set_span_in_context(span))
        return attrs.evolve(message, headers=headers)

    def after_publish(
        self,
        queue: str,
        message: Message | PubSubMessage,
        message_id: str | None,
        error: BaseException | None,
    ) -> None:
        span = self._sending.pop((queue, message.id), None)
        if span is None:
            return
        if error is not None:
            span.record_exception(error)
            span.set_status(self._status(self._error_code, str(error)))
        span.end()

    def _propagator(self) -> Any:
        """The global propagator; its fields are read again only when it changes."""
        textmap = self._propagate.get_global_textmap()
        if textmap is not self._textmap:
            self._textmap = textmap
            self._fields = frozenset(textmap.fields)
        return textmap

    def _sent_links(self, headers: Mapping[str, str]) -> list[Any]:
        """A link to the send span whose context ``headers`` carry, if any. The
        propagator's work is skipped when none of its fields is there (the fields are
        read once per configured propagator, not per message)."""
        if not headers:
            return []
        textmap = self._propagator()
        if self._fields.isdisjoint(headers):
            return []
        sent = self._trace.get_current_span(textmap.extract(headers)).get_span_context()
        return [self._link(sent)] if sent.is_valid else []

    def before_process(self, delivery: Delivery | Broadcast) -> None:
        if isinstance(delivery, Broadcast):
            self._receive(delivery)
            return
        message = delivery.message
        queue = delivery.queue
        span = self._tracer.start_span(
            f"process {queue}",
            kind=self._consumer,
            links=self._sent_links(message.headers),
            attributes={
                "messaging.system": SYSTEM,
                "messaging.destination.name": queue,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.message.id": message.id,
                "messaging.meetq.message_type": message.type,
                "messaging.meetq.priority": _PRIORITY_NAMES[message.priority],
                "messaging.meetq.attempt": delivery.attempt,
                "messaging.meetq.worker": delivery.worker,
            },
        )
        token = self._attach(self._set_span_in_context(span))
        delivery.scratch[self] = (span, token)

    def _receive(self, seen: Broadcast) -> None:
        message = seen.message
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.destination.name": seen.channel,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.message.id": message.id,
            "messaging.meetq.message_type": message.type,
            "messaging.meetq.worker": seen.source,
        }
        if seen.subscription != seen.channel:
            attributes["messaging.meetq.subscription"] = seen.subscription  # a pattern
        span = self._tracer.start_span(
            f"process {seen.channel}",
            kind=self._consumer,
            links=self._sent_links(message.headers),
            attributes=attributes,
        )
        token = self._attach(self._set_span_in_context(span))
        seen.scratch[self] = (span, token)

    def after_process(
        self, delivery: Delivery | Broadcast, outcome: Outcome, duration: float, error: str | None
    ) -> None:
        held = delivery.scratch.pop(self, None)
        if held is None:
            return
        span, token = held
        # Same task as before_process, so the token is this context's; if a hook of
        # another middleware swapped the context in between, detaching would fail: harmless.
        with contextlib.suppress(Exception):
            self._context.detach(token)
        span.set_attribute("messaging.meetq.outcome", outcome)
        if error is not None and outcome != "release":
            span.set_status(self._status(self._error_code, error))
        span.end()


def instrument_tracing(*targets: object, tracer_provider: Any = None) -> TracingMiddleware | None:
    """Trace ``targets`` with one ``TracingMiddleware``: a ``QueueManager`` (its message
    queue and PubSub, which its task dispatcher travels on), a ``MessageQueue``, a
    ``PubSub``, or a ``TaskDispatcher`` (its message queue and status PubSub). Return it,
    or None (and do nothing) when opentelemetry-api is not installed. A component
    reached twice is traced once."""
    if not tracing_available():
        return None
    middleware = TracingMiddleware(tracer_provider)
    traced: list[MessageQueue | PubSub] = []
    for target in targets:
        if isinstance(target, QueueManager):
            parts: list[object] = [target.get_message_queue(), target.get_pubsub()]
            dispatcher = target.get_task_dispatcher()
            if dispatcher is not None:
                parts += [dispatcher.message_queue, dispatcher.pubsub]
        elif isinstance(target, TaskDispatcher):
            parts = [target.message_queue, target.pubsub]
        elif isinstance(target, MessageQueue | PubSub):
            parts = [target]
        else:
            raise ValidationError(
                "target", target, "expected a QueueManager, MessageQueue, PubSub or TaskDispatcher"
            )
        for part in parts:
            if isinstance(part, MessageQueue | PubSub) and not any(part is t for t in traced):
                part.add_middleware(middleware)
                traced.append(part)
    return middleware
