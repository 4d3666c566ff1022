"""meetq_example_backend: a third-party backend written from scratch, as an outside author would.

Features: the whole backend contract within one process — a work queue (strict
priority, leases, retries, dead letters, dedup, wake-ups) in ``_work_queue`` and pub/sub
(channels, Redis glob patterns) in ``_pubsub`` — kept in plain dicts and lists. Of meetq
it imports ``meetq.backend`` only, the one face for backend authors.
Capabilities: none beyond the contract (not ``durable``, not ``cross_process``).
Config keys: ``type: example`` in ``message_queue`` or ``event_bus``; its own section
``example:`` (``ExampleConfig``): ``max_queues``, the most queue names one backend opens.
Entry point (see the ``.dist-info`` beside this package)::

    [meetq]
    example = meetq_example_backend:plugin
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from meetq.backend import (
    BackendContext,
    BackendError,
    BackendRegistry,
    BackendSpec,
    ClosedError,
    PubSubTransport,
    WorkQueueBackend,
    WorkQueueOptions,
    hookimpl,
    int_field,
)
from meetq_example_backend._pubsub import ExampleBroker
from meetq_example_backend._work_queue import ExampleWorkQueue

__all__ = ["ExampleBackend", "ExampleConfig", "plugin"]


@attrs.frozen(kw_only=True)
class ExampleConfig:
    """The ``example:`` section; meetq validates it (and ``MEETQ_EXAMPLE__*``) at load."""

    SECTION: ClassVar[str] = "example"

    max_queues: int = int_field(1000, 1, 10**6)


class ExampleBackend:
    """Queues by name and one broadcast broker, shared by everything built from this object."""

    name = "example"
    capabilities: frozenset[str] = frozenset()

    def __init__(self, config: ExampleConfig | None = None) -> None:
        self._config = config if config is not None else ExampleConfig()
        self._queues: dict[str, ExampleWorkQueue] = {}
        self._broker = ExampleBroker()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the example backend was closed; build a new one")

    def work_queue(self, queue_name: str, options: WorkQueueOptions) -> WorkQueueBackend:
        self._check_open()
        # One name, one object: the queue's state lives in it. (Core keeps one handle
        # per name and checks that every opener asks for the same options.)
        queue = self._queues.get(queue_name)
        if queue is None and len(self._queues) >= self._config.max_queues:
            raise BackendError(
                f"example: queue {queue_name!r} would be queue number "
                f"{len(self._queues) + 1}; example.max_queues is {self._config.max_queues}",
                backend="example",
            )
        if queue is None:
            queue = self._queues[queue_name] = ExampleWorkQueue(queue_name, options)
        return queue

    def pubsub_transport(self) -> PubSubTransport:
        self._check_open()
        return self._broker.transport()

    async def aclose(self) -> None:
        """Close every queue and transport made from it (later calls raise ClosedError)."""
        self._closed = True
        for queue in self._queues.values():
            await queue.aclose()
        await self._broker.aclose()


def _create(context: BackendContext) -> ExampleBackend:
    return ExampleBackend(context.config.section(ExampleConfig))


class _ExamplePlugin:
    @hookimpl
    def meetq_register_backends(self, registry: BackendRegistry) -> None:
        registry.register(
            BackendSpec(
                name="example",
                factory=_create,
                config=ExampleConfig,
                description="worked example of a third-party backend (in memory, from scratch)",
            )
        )


plugin = _ExamplePlugin()
