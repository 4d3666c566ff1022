"""Middleware: the one surface around publishing and processing a message.

Metrics (``meetq.observability.Metrics``) and tracing (``TracingMiddleware``) are built on
it, and a user's own object plugs in the same way::

    class Timing:
        def after_process(self, delivery, outcome, duration, error):
            print(delivery.queue, delivery.message.type, outcome, f"{duration:.3f}s")

    mq.add_middleware(Timing())

A middleware is any object with some of the four methods of ``Middleware`` (each one is
optional; a missing one is never called):

- ``before_publish(queue, message)`` runs before the message is validated and stored; it
  may return a replacement message (``attrs.evolve(message, headers=...)``: tracing puts
  its context in the headers this way) or None to keep it;
- ``after_publish(queue, message, message_id, error)``: once per message, stored
  (``message_id`` set, ``error`` None) or not (``message_id`` None, ``error`` the exception
  that ``publish`` raises);
- ``before_process(delivery)``: a decoded message is about to reach its handler;
- ``after_process(delivery, outcome, duration, error)``: that delivery was settled.
  ``outcome`` is one of ``OUTCOMES``: ``ack``, ``retry``, ``dead``, ``dropped`` (dead-letter
  queue disabled) or ``release`` (handed back uncharged, e.g. by ``stop()``); ``duration``
  is seconds since ``before_process``; ``error`` the failure's text (None on ``ack``).

Design (why it looks like this):

- Hooks run inline on the event loop, in the order the middleware was added (the
  ``after_*`` ones too): they must be quick and must not block. A hook that raises is
  logged (rate-limited) and skipped; it never fails a publish or a delivery, since
  observing a message must not change what happens to it.
- Unused, it costs one truthiness test of a tuple per publish and per delivery: the
  queue resolves the methods once, in ``add_middleware``, not per message.
- ``Delivery.scratch`` carries a middleware's own state from ``before_process`` to
  ``after_process`` (a span, a start time), keyed by whatever the middleware likes
  (itself, say), so no middleware needs a dict of its own keyed by lease.
- A message that cannot be decoded never reaches ``before_process`` (there is no message
  to show); ``MessageQueue.stats()["undecodable"]`` counts those.
- A ``PubSub`` takes the same hooks (``PubSub.add_middleware``): the channel for the
  queue, a ``PubSubMessage``, and a ``Broadcast`` (one handler call) for the delivery;
  one object (tracing's) may serve both and tell them apart by those types.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeVar

import attrs

from meetq.core._ratelog import LogEvery
from meetq.core.errors import ValidationError
from meetq.core.types import Message, PubSubMessage

__all__ = ["OUTCOMES", "Broadcast", "Delivery", "Middleware", "MiddlewareChain", "Outcome"]

log = logging.getLogger("meetq.middleware")

Outcome = Literal["ack", "retry", "dead", "dropped", "release"]
OUTCOMES: tuple[Outcome, ...] = ("ack", "retry", "dead", "dropped", "release")

# A Settlement's outcome ("drop") as middleware sees it.
_SETTLED_AS: dict[str, Outcome] = {
    "ack": "ack",
    "retry": "retry",
    "dead": "dead",
    "drop": "dropped",
    "release": "release",
}


@attrs.define(slots=True)
class Delivery:
    """One delivery of a message to a handler, as middleware sees it (the queue builds
    it positionally: a keyword call costs a no-op delivery measurably more).

    ``attempt`` is 1 on the first delivery; ``worker`` names the consuming process
    (``MessageQueue.worker_name``); ``started`` is the ``time.perf_counter()`` reading
    taken just before ``before_process``; ``scratch`` is free for middleware to use.
    """

    queue: str
    worker: str
    message: Message
    attempt: int
    started: float = 0.0
    scratch: dict[Any, Any] = attrs.field(factory=dict)


@attrs.define(slots=True)
class Broadcast:
    """One PubSub message reaching one handler, as middleware added to a ``PubSub`` sees
    it (``before_process`` / ``after_process`` get this instead of a ``Delivery``).

    ``channel`` is the channel it was published on (without the namespace prefix);
    ``subscription`` the channel or pattern the handler subscribed to; ``source`` the
    receiving ``PubSub``'s source name (its process). The outcome is ``ack`` when the
    handler returned, ``dropped`` when it raised (PubSub does not retry; ``error`` holds
    the failure), ``release`` when a stop cancelled it.
    """

    channel: str
    subscription: str
    source: str
    message: PubSubMessage
    started: float = 0.0
    scratch: dict[Any, Any] = attrs.field(factory=dict)


class Middleware(Protocol):
    """What a middleware may implement; every method is optional (see the module doc)."""

    def before_publish(self, queue: str, message: Message) -> Message | None: ...

    def after_publish(
        self, queue: str, message: Message, message_id: str | None, error: BaseException | None
    ) -> None: ...

    def before_process(self, delivery: Delivery) -> None: ...

    def after_process(
        self, delivery: Delivery, outcome: Outcome, duration: float, error: str | None
    ) -> None: ...


M = TypeVar("M", Message, PubSubMessage)

_HOOKS = ("before_publish", "after_publish", "before_process", "after_process")


class MiddlewareChain:
    """The middleware of one component, its methods resolved once when added.

    The component tests ``chain.publishing`` / ``chain.processing`` (plain tuples: empty
    is falsy) before doing any per-message work for it. ``message_class`` is what the
    component publishes (``Message``; ``PubSubMessage`` for a ``PubSub``): a
    ``before_publish`` may replace the message only with one of that class.
    """

    def __init__(self, owner: str, message_class: type[Any] = Message) -> None:
        self._owner = owner
        self._message_class = message_class
        self.middleware: tuple[object, ...] = ()
        self.publishing: tuple[object, ...] = ()
        self.processing: tuple[object, ...] = ()
        self._hooks: dict[str, tuple[Callable[..., Any], ...]] = {h: () for h in _HOOKS}
        self._failed_log = LogEvery()

    def add(self, middleware: object) -> None:
        """Add ``middleware``; it must have at least one of the four hook methods."""
        found = {h: getattr(middleware, h, None) for h in _HOOKS}
        if not any(callable(f) for f in found.values()):
            raise ValidationError(
                "middleware",
                middleware,
                f"expected an object with at least one of the methods {', '.join(_HOOKS)}",
            )
        if any(m is middleware for m in self.middleware):
            raise ValidationError("middleware", middleware, "this middleware is already added")
        self.middleware = (*self.middleware, middleware)
        for name, func in found.items():
            if callable(func):
                self._hooks[name] = (*self._hooks[name], func)
        if callable(found["before_publish"]) or callable(found["after_publish"]):
            self.publishing = (*self.publishing, middleware)
        if callable(found["before_process"]) or callable(found["after_process"]):
            self.processing = (*self.processing, middleware)

    def _failed(self, hook: Callable[..., Any], exc: BaseException) -> None:
        if self._failed_log.tick():
            log.error(
                "meetq: %s: middleware %r raised %r; ignored (a middleware never changes "
                "what happens to a message)",
                self._owner,
                hook,
                exc,
                exc_info=exc,
            )

    def before_publish(self, queue: str, message: M) -> M:
        """Run every ``before_publish``; return the message to store."""
        for hook in self._hooks["before_publish"]:
            try:
                replaced = hook(queue, message)
            except Exception as exc:
                self._failed(hook, exc)
                continue
            if isinstance(replaced, self._message_class):
                message = replaced
        return message

    def after_publish(
        self, queue: str, message: object, message_id: str | None, error: BaseException | None
    ) -> None:
        for hook in self._hooks["after_publish"]:
            try:
                hook(queue, message, message_id, error)
            except Exception as exc:
                self._failed(hook, exc)

    def before_process(self, delivery: Delivery | Broadcast) -> None:
        delivery.started = time.perf_counter()
        for hook in self._hooks["before_process"]:
            try:
                hook(delivery)
            except Exception as exc:
                self._failed(hook, exc)

    def after_process(
        self, delivery: Delivery | Broadcast, settled: str, error: str | None
    ) -> None:
        """``settled`` is the settlement's outcome (``drop`` becomes ``dropped``)."""
        duration = time.perf_counter() - delivery.started
        outcome = _SETTLED_AS[settled]
        error = None if outcome == "ack" else (error or None)
        for hook in self._hooks["after_process"]:
            try:
                hook(delivery, outcome, duration, error)
            except Exception as exc:
                self._failed(hook, exc)
