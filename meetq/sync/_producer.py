"""SyncProducer: publish and inspect from plain (non-async) code — Django, Flask, scripts.

Design (why it looks like this): a WSGI view has no event loop, and
``asyncio.run(mq.publish(...))`` on a manager built at import fails on the second
request (its client belongs to the first, closed loop). So the producer side exists
twice, async (``MessageQueue``) and blocking (this), over one set of rules: every
message is checked and encoded by ``core._publishing`` (the same errors, naming the same
fields), ``stats()`` is the queue-wide part of ``MessageQueue.stats()`` built by the same
function, and the store is the backend's blocking face (``SyncBackend``, made by
``BackendSpec.sync_factory``): on Redis the sync client running the same Lua scripts
with the same KEYS and ARGV, on memory a hand-off to the event loop holding the broker.
The backends own thread safety, time bounds and fork safety (see theirs); this object
only adds ``close()`` and refuses calls after it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from meetq.core._build import build_config
from meetq.core._publishing import (
    default_source,
    prepare_batch,
    prepare_message,
    queue_options,
    queue_totals,
    requeue_request,
)
from meetq.core._validation import check_channel, check_name, check_seconds, check_text
from meetq.core.config import MeetqConfig, MessageQueueConfig, load_config
from meetq.core.errors import ClosedError, TrackingUnsupported, ValidationError
from meetq.core.protocols import CAP_TRACKING, SyncBackend, SyncWorkQueue
from meetq.core.registry import BackendContext, BackendRegistry
from meetq.core.serialization import JsonSerializer, Serializer, encode_pubsub_message
from meetq.core.tracking import (
    MessageStatus,
    SyncTrackingWorkQueue,
    cancel_record,
    not_finished,
    result_of,
    results_off,
    status_from_facts,
)
from meetq.core.types import Message, PubSubMessage
from meetq.manager import build_registry

__all__ = ["SyncProducer", "SyncPubSub"]

# result(): how often it reads again while no push came (as MessageQueue.result).
_RECHECK = 5.0


class SyncProducer:
    """The producer calls of ``MessageQueue`` (and ``PubSub.publish``), blocking.

    Build one per process, at import, from the config the async services read::

        producer = SyncProducer("meetq.yaml")       # same sections, same MEETQ_* overrides
        producer.publish(Message(type="send_email", payload={"to": "a@b.c"}))

    Safe from any number of threads at once (a WSGI server's); needs no event loop;
    holds one connection pool, rebuilt in a forked child (gunicorn pre-fork). Every
    call ends within the backend's bound (``redis.socket_timeout``,
    ``memory.sync_call_timeout``) or raises ``BackendUnavailableError``; bad input raises
    ``ValidationError`` naming the field, before anything is sent; after ``close()``
    every call raises ``ClosedError``. ``redis`` is an existing sync client
    (``redis.Redis``, ``redis.RedisCluster``, a sync Sentinel ``master_for`` client,
    ``fakeredis.FakeRedis``), used as is and left open.
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | Mapping[str, Any] | MeetqConfig | None = None,
        redis: Any = None,
        *,
        queue_name: str | None = None,
        serializer: Serializer | None = None,
        registry: BackendRegistry | None = None,
    ) -> None:
        reg = registry if registry is not None else build_registry()
        self.config = load_config(config, registry=reg)
        overrides = {} if queue_name is None else {"queue_name": queue_name}
        mq: MessageQueueConfig = build_config(
            MessageQueueConfig, self.config.message_queue, overrides
        )
        self.queue_config = mq
        self.name = mq.queue_name
        self.serializer: Serializer = serializer if serializer is not None else JsonSerializer()
        context = BackendContext(config=self.config, client=redis)
        spec = reg.get(mq.type, key="message_queue.type")
        self._backend_name = spec.name
        self._capabilities = spec.capabilities
        self._result_keep_ms = int(mq.result_ttl * 1000)
        self._backend: SyncBackend = reg.create_sync(mq.type, context, key="message_queue.type")
        self._queue: SyncWorkQueue = self._backend.work_queue(mq.queue_name, queue_options(mq))
        self._registry, self._context = reg, context
        self._pubsub: SyncPubSub | None = None
        self._own_backends: list[SyncBackend] = [self._backend]
        self._lock = threading.Lock()
        self._closed = False

    # -- publishing --------------------------------------------------------------------

    def publish(
        self, message: Message, *, delay: float | None = None, not_before: float | None = None
    ) -> str:
        """Store ``message`` and return its id; as ``MessageQueue.publish``."""
        stored = prepare_message(
            message, delay, not_before, "message", self.serializer, self.queue_config.max_retries
        )
        self._check_open()
        return self._queue.enqueue([stored])[0]

    def publish_batch(
        self, messages: Sequence[Message], *, delay: float | None = None
    ) -> list[str]:
        """Validate every message, then store them all or none in one round trip."""
        stored = prepare_batch(messages, delay, self.serializer, self.queue_config.max_retries)
        self._check_open()
        if not stored:
            return []
        return self._queue.enqueue(stored)

    # -- inspection --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The queue-wide part of ``MessageQueue.stats()`` (same keys); one round trip."""
        self._check_open()
        return queue_totals(self.name, self._backend_name, self._queue.inspect())

    def dead_letter_count(self) -> int:
        """Dead letters kept (after the size and age caps)."""
        self._check_open()
        return self._queue.inspect().dead

    def requeue_dead_letters(self, max_count: int = 100, *, message_type: str | None = None) -> int:
        """Put up to ``max_count`` oldest dead letters back, attempts reset; how many moved.
        With ``message_type``, only dead letters of that type move (as
        ``MessageQueue.requeue_dead_letters``)."""
        request = requeue_request(max_count, message_type)
        self._check_open()
        return self._queue.maintain(request)

    # -- a message by id (backends with the tracking capability) ------------------------

    def _tracking(self, call: str) -> SyncTrackingWorkQueue:
        self._check_open()
        if CAP_TRACKING not in self._capabilities:
            raise TrackingUnsupported(self._backend_name, call)
        return self._queue  # type: ignore[return-value]  # declared by CAP_TRACKING

    def status(self, message_id: str) -> MessageStatus:
        """As ``MessageQueue.status``: the message's state and facts; one round trip."""
        check_name("message_id", message_id)
        facts = self._tracking("status()").facts(message_id)
        return status_from_facts(message_id, facts, self.serializer)

    def cancel(self, message_id: str) -> bool:
        """As ``MessageQueue.cancel``: True when it was waiting, delayed or running (its
        handler is stopped where it runs), False for an unknown or finished id."""
        check_name("message_id", message_id)
        queue = self._tracking("cancel()")
        before = status_from_facts(message_id, queue.facts(message_id), self.serializer)
        record = cancel_record(before)
        if record is None:
            return False
        keep_ms = max(int(self.queue_config.status_ttl * 1000), self._result_keep_ms)
        return queue.cancel(message_id, record, keep_ms)

    def result(self, message_id: str, timeout: float | None = None) -> Any:
        """As ``MessageQueue.result``, blocking the calling thread: the handler's return
        value, waited for by push; ``ResultError`` says why there is none."""
        check_name("message_id", message_id)
        limit = None if timeout is None else check_seconds("timeout", timeout)
        queue = self._tracking("result()")
        if self._result_keep_ms <= 0:
            raise results_off(message_id)
        deadline = None if limit is None else time.monotonic() + limit
        with queue.final_wait(message_id) as wait:
            while True:
                facts = queue.facts(message_id)
                done, value = result_of(message_id, facts, self.serializer)
                if done:
                    return value
                left = _RECHECK if deadline is None else min(_RECHECK, deadline - time.monotonic())
                if left <= 0:
                    raise not_finished(message_id, facts, self.serializer, limit)
                wait(left)

    # -- broadcast ---------------------------------------------------------------------

    @property
    def pubsub(self) -> SyncPubSub:
        """The blocking ``PubSub.publish``, on the ``event_bus`` section's backend."""
        self._check_open()
        with self._lock:
            if self._pubsub is None:
                eb = self.config.event_bus
                name = self._registry.get(eb.type, key="event_bus.type").name
                backend = self._backend
                if name != self._backend_name:
                    backend = self._registry.create_sync(
                        eb.type, self._context, key="event_bus.type"
                    )
                    self._own_backends.append(backend)
                self._pubsub = SyncPubSub(backend, namespace=eb.namespace)
            return self._pubsub

    # -- lifecycle ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this SyncProducer is closed; create a new one")

    def close(self) -> None:
        """Release the connections; later calls raise ``ClosedError``. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pubsub = self._pubsub
        if pubsub is not None:
            pubsub.close()
        for backend in self._own_backends:
            backend.close()

    def __enter__(self) -> SyncProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SyncPubSub:
    """``PubSub.publish`` for plain code: same namespace, wire form and validation.

    Get it as ``producer.pubsub``. ``source`` fills ``PubSubMessage.source`` when a
    message leaves it None (default: the program name and this process's pid).
    """

    def __init__(
        self,
        backend: SyncBackend,
        *,
        namespace: str,
        serializer: Serializer | None = None,
        source: str | None = None,
    ) -> None:
        if source is not None and (not isinstance(source, str) or not source):
            raise ValidationError("source", source, "expected a non-empty string or None")
        if source is not None:
            check_text("source", source)
        self._backend = backend
        self._prefix = f"{namespace}:"
        self._serializer: Serializer = serializer if serializer is not None else JsonSerializer()
        self._source = source
        self._closed = False

    def publish(self, channel: str, message: PubSubMessage) -> int:
        """Send ``message`` to every subscriber of ``channel``; how many received it."""
        check_channel("channel", channel)
        if not isinstance(message, PubSubMessage):
            raise ValidationError("message", message, "expected a PubSubMessage")
        # The pid is read per call: after a fork the child is another source.
        data = encode_pubsub_message(
            message, self._serializer, source=self._source or default_source()
        )
        if self._closed:
            raise ClosedError("this SyncProducer is closed; create a new one")
        return self._backend.publish(self._prefix + channel, data)

    def close(self) -> None:
        """Refuse later publishes; the connections belong to the producer."""
        self._closed = True
