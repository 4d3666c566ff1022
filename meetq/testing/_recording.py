"""``RecordingBackend``: any backend, with every call recorded and faults injected by name.

A test that has to stage a failure (a subscribe that fails once, an exchange that is slow
to return, a message stream that breaks) wraps the backend it is given in a
``RecordingBackend`` and hands the wrapper to the component, instead of patching the
component's private members. The wrapper speaks only the public ``Backend`` protocol:
``work_queue()`` and ``pubsub_transport()`` return proxies that forward every member of
the real object, record each call, then apply a fault or an ``around`` hook registered
under the member's name. So it wraps memory, Redis or a third party's backend alike, and
keeps working when the interface grows a member.

    recording = RecordingBackend(backend)
    recording.fail("subscribe", BackendUnavailableError("down", backend="test"))
    ps = PubSub(recording)
    ...
    assert recording.count("subscribe") == 2

Needs nothing beyond meetq (no pytest).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, cast

import attrs

from meetq.core.errors import ValidationError
from meetq.core.protocols import Backend, PubSubTransport, WorkQueueBackend, WorkQueueOptions

__all__ = ["Call", "RecordingBackend"]

#: ``around`` hook: ``hook(call_next, *args, **kwargs)``; it calls (and, for a coroutine
#: member, awaits) ``call_next(*args, **kwargs)`` itself, or not, and returns the result.
AroundHook = Callable[..., Any]


@attrs.frozen(kw_only=True)
class Call:
    """One call the wrapped backend received: which object, which member, which arguments."""

    #: ``"work_queue:<queue name>"`` or ``"pubsub"``.
    target: str
    name: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]


@attrs.define
class _Fault:
    error: BaseException
    remaining: int | None  # None: until healed


class RecordingBackend:
    """Wraps a ``Backend``; records every call on its queues and transports; injects faults.

    - ``calls``: every ``Call`` in order; ``count(name)`` counts one member's calls.
    - ``fail(name, error, times=1)``: the next ``times`` calls of ``name`` (on any queue or
      transport of this wrapper) raise ``error`` without reaching the backend;
      ``times=None`` fails every call until ``heal(name)``.
    - ``around(name, hook)``: every call of ``name`` goes through ``hook`` (see
      ``AroundHook``), to delay a result, change it, or break a stream.
    - ``work_queues`` / ``transports``: the real objects the backend returned, by creation.

    ``name`` and ``capabilities`` are the wrapped backend's; ``aclose()`` closes it.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name
        self.capabilities = backend.capabilities
        self.calls: list[Call] = []
        self.work_queues: list[WorkQueueBackend] = []
        self.transports: list[PubSubTransport] = []
        self._faults: dict[str, list[_Fault]] = {}
        self._around: dict[str, AroundHook] = {}

    # -- the Backend protocol -------------------------------------------------------------

    def work_queue(self, queue_name: str, options: WorkQueueOptions) -> WorkQueueBackend:
        """The backend's work queue, behind a recording proxy."""
        inner = self.backend.work_queue(queue_name, options)
        self.work_queues.append(inner)
        return cast(WorkQueueBackend, _Proxy(self, f"work_queue:{queue_name}", inner))

    def pubsub_transport(self) -> PubSubTransport:
        """The backend's Pub/Sub transport, behind a recording proxy."""
        inner = self.backend.pubsub_transport()
        self.transports.append(inner)
        return cast(PubSubTransport, _Proxy(self, "pubsub", inner))

    async def aclose(self) -> None:
        """Close the wrapped backend."""
        await self.backend.aclose()

    # -- recording and faults -------------------------------------------------------------

    def count(self, name: str) -> int:
        """How many calls of member ``name`` the wrapper has seen (failed ones included)."""
        return sum(1 for call in self.calls if call.name == name)

    def fail(self, name: str, error: BaseException, *, times: int | None = 1) -> None:
        """Make the next ``times`` calls of ``name`` raise ``error`` (``None``: all, until
        ``heal``). Faults on one name queue up in the order they were added."""
        if times is not None and times < 1:
            raise ValidationError("times", times, "expected 1 or more, or None")
        self._faults.setdefault(name, []).append(_Fault(error, times))

    def heal(self, name: str | None = None) -> None:
        """Drop the pending faults on ``name`` (on every name when ``None``)."""
        if name is None:
            self._faults.clear()
        else:
            self._faults.pop(name, None)

    def around(self, name: str, hook: AroundHook | None) -> None:
        """Route every call of ``name`` through ``hook``; ``None`` removes the hook."""
        if hook is None:
            self._around.pop(name, None)
        else:
            self._around[name] = hook

    def _enter(self, target: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.calls.append(Call(target=target, name=name, args=args, kwargs=dict(kwargs)))
        faults = self._faults.get(name)
        if not faults:
            return
        fault = faults[0]
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining == 0:
                faults.pop(0)
        raise fault.error


class _Proxy:
    """Forwards every member of ``inner``; calls go through the owner's record and faults."""

    def __init__(self, owner: RecordingBackend, target: str, inner: Any) -> None:
        self._owner = owner
        self._target = target
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name.startswith("_") or not callable(value):
            return value
        owner, target = self._owner, self._target
        if inspect.iscoroutinefunction(value):

            async def call_async(*args: Any, **kwargs: Any) -> Any:
                owner._enter(target, name, args, kwargs)
                hook = owner._around.get(name)
                if hook is not None:
                    return await hook(value, *args, **kwargs)
                return await value(*args, **kwargs)

            return call_async

        def call(*args: Any, **kwargs: Any) -> Any:
            owner._enter(target, name, args, kwargs)
            hook = owner._around.get(name)
            if hook is not None:
                return hook(value, *args, **kwargs)
            return value(*args, **kwargs)

        return call

    def __repr__(self) -> str:
        return f"<recording {self._target} of {self._inner!r}>"
