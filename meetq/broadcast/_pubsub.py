"""PubSub: broadcast events to every subscriber of a channel, across processes.

The front end over a backend's ``PubSubTransport``. Everything users touch lives here
once — validation, namespacing, serialization, per-handler buffering and overflow,
statistics, logging — so memory and Redis behave the same.

Why it is built this way:

- One transport per ``PubSub`` (one Redis connection, one reader task) carries every
  subscription of the object; the reader only decodes and routes.
- Each (handler, subscription) pair has its own bounded buffer and consumer task, so a
  slow handler delays nobody else, and each handler sees a channel's messages in the
  order they arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any

from meetq.core._backoff import Backoff
from meetq.core._build import build_config
from meetq.core._glob import glob_escape
from meetq.core._lifecycle import AsyncService
from meetq.core._publishing import default_source
from meetq.core._ratelog import LogEvery
from meetq.core._usercode import UserCodeFailed, call_user, user_failure, user_runner
from meetq.core._validation import (
    check_channel,
    check_seconds,
    check_text,
    is_async_callable,
)
from meetq.core.config import EventBusConfig
from meetq.core.errors import ClosedError, ValidationError
from meetq.core.middleware import Broadcast, MiddlewareChain
from meetq.core.protocols import Backend, PubSubTransport, TransportMessage
from meetq.core.serialization import (
    JsonSerializer,
    Serializer,
    decode_pubsub_message,
    encode_pubsub_message,
)
from meetq.core.types import PubSubMessage

__all__ = ["PubSub", "PubSubHandler", "ReconnectCallback"]

log = logging.getLogger("meetq.pubsub")

#: A handler receives one ``PubSubMessage``; ``async def`` or plain (run in a thread).
PubSubHandler = Callable[[PubSubMessage], Any]
#: Called after a reconnect, once every subscription is confirmed again.
ReconnectCallback = Callable[[], Any]

# After an unexpected reader failure the reader restarts after 10 ms; if it keeps failing
# without routing anything, it waits twice as long each time, up to one second.
_READER_RESTART = Backoff(0.01, 1.0)


class _Subscriber:
    """One handler on one channel or pattern: its bounded buffer and consumer task."""

    __slots__ = (
        "buffer",
        "busy",
        "drop_log",
        "handler",
        "key",
        "room",
        "run",
        "task",
        "waiter",
    )

    def __init__(self, key: tuple[str, str], handler: PubSubHandler) -> None:
        self.key = key  # ("channel" | "pattern", name without namespace)
        self.handler = handler
        self.run = user_runner(handler, is_async=is_async_callable(handler))
        self.buffer: deque[PubSubMessage] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.room: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.busy = False
        self.drop_log = LogEvery()  # overflow warnings, per subscriber


class _NameLock:
    """Serialises the transport (un)subscribe calls of one channel or pattern."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class PubSub(AsyncService):
    """Publish to and subscribe on named channels through one backend transport.

    Contract:

    - ``subscribe``/``psubscribe`` return once the backend confirmed the subscription;
      anything published after that is delivered. Called before ``start()`` they only
      record the subscription: ``start()`` confirms all of them before it returns, and
      delivery begins then.
    - Every handler receives a channel's messages in publish order (for a pattern:
      in arrival order). Each (handler, subscription) pair has a buffer of
      ``subscriber_buffer`` messages and its own task, so a slow handler never delays
      another handler or channel. A full buffer applies ``subscriber_overflow``:
      ``drop_oldest`` / ``drop_newest`` discard (counted in ``dropped``, logged at most
      every few seconds), ``block`` makes the reader wait — no loss here, but every
      subscription of this PubSub waits too, and Redis may cut a reader that lags far
      behind (its client output buffer limit).
    - Delivery is at most once: messages published while a subscriber is disconnected
      are lost (that is Redis Pub/Sub). The transport reconnects with exponential
      backoff and jitter, re-subscribes everything, counts ``reconnects`` and then calls
      the ``on_reconnect`` callbacks so a service can re-read state it may have missed.
    - Wire channels are ``f"{namespace}:{channel}"``; delivered messages carry the
      channel (and pattern subscriptions match) without the prefix.
    - A bad channel, a non-``PubSubMessage`` or an unencodable payload raises
      ``ValidationError``/``SerializationError`` naming the field, and nothing is sent.
      Backend failures raise ``BackendUnavailableError``.
    - A handler's exception is logged and counted in ``total_failed``; a message that
      cannot be decoded is logged and counted in ``decode_errors``; neither stops the
      reader.
    """

    def __init__(
        self,
        backend: Backend,
        config: EventBusConfig | Mapping[str, Any] | None = None,
        *,
        serializer: Serializer | None = None,
        source: str | None = None,
        **overrides: Any,
    ) -> None:
        """``config`` is an ``EventBusConfig`` or a mapping of its keys; ``overrides``
        replace single keys (``PubSub(backend, namespace="svc", subscriber_buffer=10)``).
        ``source`` fills ``PubSubMessage.source`` when a message leaves it None (default:
        the program name and pid)."""
        self.config = build_config(EventBusConfig, config, overrides)
        self._backend = backend
        self._serializer: Serializer = serializer if serializer is not None else JsonSerializer()
        if source is not None and (not isinstance(source, str) or not source):
            raise ValidationError("source", source, "expected a non-empty string or None")
        if source is not None:
            check_text("source", source)
        self.source = source or default_source()
        self._prefix = f"{self.config.namespace}:"
        # Patterns are the transport contract's globs: the namespace is quoted in them.
        self._pattern_prefix = glob_escape(self._prefix)
        self._yield_at = self.config.subscriber_buffer // 2
        self._transport: PubSubTransport = backend.pubsub_transport()
        self._transport.on_reconnect(self._reconnected)
        self._channels: dict[str, list[_Subscriber]] = {}
        self._patterns: dict[str, list[_Subscriber]] = {}
        self._reconnect_callbacks: list[ReconnectCallback] = []
        # Names the transport is subscribed to (confirmed), and one lock per name so a
        # subscribe, unsubscribe and subscribe of one name reach the transport in order.
        self._wired: set[tuple[str, str]] = set()
        self._name_locks: dict[tuple[str, str], _NameLock] = {}
        # Transport calls in flight: while any is, ``block`` overflow lets buffers grow
        # (the reader must keep reading to see the confirmation; see ``_overflow``).
        self._changing = 0
        self._blocked_on: _Subscriber | None = None
        # Unsubscribed handlers whose consumers still drain their buffers.
        self._retired: set[_Subscriber] = set()
        self._reader: asyncio.Task[None] | None = None
        self._callback_tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._stopped = False
        self._published = 0
        self._received = 0
        self._processed = 0
        self._failed = 0
        self._dropped = 0
        self._decode_errors = 0
        self._decode_log = LogEvery()
        # Middleware (meetq.core.middleware): unused, one tuple test per publish/delivery.
        self._middleware = MiddlewareChain("pubsub", PubSubMessage)

    # -- lifecycle ----------------------------------------------------------------------

    async def _start(self) -> None:
        """Start the reader and confirm every subscription recorded so far (``start()``;
        the rules are ``AsyncService``'s).

        If it raises (the backend is down), nothing is left running and every recorded
        subscription is still recorded: call ``start()`` again later.
        """
        self._check_open()
        # The reader runs first: a Redis transport confirms subscriptions through it.
        reader = self._reader = asyncio.create_task(self._read(), name="meetq-pubsub-reader")
        channels, patterns = list(self._channels), list(self._patterns)
        self._changing += 1
        try:
            if channels:
                await self._transport.subscribe([self._prefix + c for c in channels])
                self._wired.update(("channel", c) for c in channels)
            if patterns:
                await self._transport.psubscribe(
                    [self._pattern_prefix + p for p in patterns]
                )
                self._wired.update(("pattern", p) for p in patterns)
        except BaseException:
            # Undo what was done, so a later start() begins from scratch. The channels
            # may be confirmed when the patterns failed: unsubscribe them (best effort,
            # while the reader still runs to see the confirmation), then stop the reader.
            done = [self._prefix + name for kind, name in self._wired if kind == "channel"]
            self._wired.clear()
            try:
                if done and not self._stopping:
                    with contextlib.suppress(Exception):
                        await self._transport.unsubscribe(done)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                self._reader = None
            raise
        finally:
            self._changing -= 1
        # Only now: a subscriber's consumer must not run if start() fails.
        for subs in (*self._channels.values(), *self._patterns.values()):
            for sub in subs:
                if sub.task is None:
                    self._start_consumer(sub)
        self._started = True

    async def stop(self, grace: float | None = None) -> None:
        """Stop receiving, let handlers finish their buffered messages within ``grace``
        (default ``shutdown_grace``), then close the transport. Idempotent.

        Returns within ``grace`` plus closing the connection (bounded by
        ``redis.socket_connect_timeout``). Cancelling it raises ``CancelledError``;
        calling it again then finishes the job.
        """
        if grace is not None:
            grace = check_seconds("grace", grace)
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.shutdown_grace if grace is None else grace
        try:
            await self._stop(grace)
        except asyncio.CancelledError:
            self._stopped = False
            raise

    async def _stop(self, grace: float) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        subs = [s for group in (*self._channels.values(), *self._patterns.values()) for s in group]
        # Unsubscribed handlers still draining their buffers get the same grace.
        subs += self._retired
        consumers = [s.task for s in subs if s.task is not None and not s.task.done()]
        if consumers:
            for sub in subs:
                self._wake(sub)  # an idle consumer sees the stop and returns at once
            _, late = await asyncio.wait(consumers, timeout=grace)
            left = sum(len(s.buffer) for s in subs)
            if late:
                log.warning(
                    "meetq pubsub stopped after %.1fs grace with %d buffered message(s) "
                    "unhandled; they are dropped",
                    grace,
                    left,
                )
                self._dropped += left
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
        for task in list(self._callback_tasks):
            task.cancel()
        await asyncio.gather(*self._callback_tasks, return_exceptions=True)
        await self._transport.aclose()

    # -- subscribing --------------------------------------------------------------------

    async def subscribe(self, channel: str, handler: PubSubHandler) -> None:
        """Call ``handler`` for every message published on ``channel`` from now on.

        Returns once the subscription is confirmed (after ``start()``; before it, once
        recorded). Subscribing the same handler to a channel twice has no further effect.
        """
        await self._add("channel", channel, handler)

    async def psubscribe(self, pattern: str, handler: PubSubHandler) -> None:
        """Like ``subscribe`` for every channel matching the glob ``pattern``
        (``"meeting.*"``; ``*``, ``?``, ``[abc]`` as in Redis ``PSUBSCRIBE``)."""
        await self._add("pattern", pattern, handler)

    async def unsubscribe(self, channel: str, handler: PubSubHandler | None = None) -> None:
        """Remove ``handler`` from ``channel``, or every handler of it when None.

        The handler gets nothing published after this returns; messages already in its
        buffer are still handled.
        """
        await self._remove("channel", channel, handler)

    async def punsubscribe(self, pattern: str, handler: PubSubHandler | None = None) -> None:
        """Remove ``handler`` (or all handlers) from the pattern subscription ``pattern``."""
        await self._remove("pattern", pattern, handler)

    def subscribed_channels(self) -> list[str]:
        """Channels with at least one handler, sorted (without the namespace prefix)."""
        return sorted(self._channels)

    def subscribed_patterns(self) -> list[str]:
        """Patterns with at least one handler, sorted (without the namespace prefix)."""
        return sorted(self._patterns)

    def on_reconnect(self, callback: ReconnectCallback) -> None:
        """Call ``callback()`` (async or plain) after each reconnect, once every
        subscription is confirmed again: re-read state that changed while disconnected."""
        if not callable(callback):
            raise ValidationError("callback", callback, "expected a callable")
        self._reconnect_callbacks.append(callback)

    async def _add(self, kind: str, name: str, handler: PubSubHandler) -> None:
        self._check_open()
        _check_channel(kind, name)
        if not callable(handler):
            raise ValidationError("handler", handler, "expected a callable")
        await self._after_start_in_progress()
        table = self._channels if kind == "channel" else self._patterns
        subs = table.get(name)
        sub = next((s for s in subs if s.handler == handler), None) if subs else None
        created = sub is None
        if sub is None:
            sub = _Subscriber((kind, name), handler)
            if subs is None:
                subs = table[name] = []
            subs.append(sub)
            if self._started:
                self._start_consumer(sub)
        if not self._started:
            return  # recorded; start() confirms it
        key = (kind, name)
        try:
            async with self._serialised(key):
                # Confirmed by an earlier call, or unsubscribed meanwhile: nothing to do.
                if key in self._wired or not table.get(name):
                    return
                self._changing += 1
                self._unblock_reader()
                try:
                    if kind == "channel":
                        await self._transport.subscribe([self._prefix + name])
                    else:
                        await self._transport.psubscribe([self._pattern_prefix + name])
                finally:
                    self._changing -= 1
                self._wired.add(key)
        except BaseException:
            # Not subscribed (failed, timed out or cancelled): this call's handler is not
            # kept. Handlers of other calls waiting for this name are theirs to settle.
            if created:
                self._drop(kind, name, sub)
            raise

    async def _remove(self, kind: str, name: str, handler: PubSubHandler | None) -> None:
        _check_channel(kind, name)
        await self._after_start_in_progress()
        table = self._channels if kind == "channel" else self._patterns
        subs = table.get(name)
        if not subs:
            return
        gone = [s for s in subs if handler is None or s.handler == handler]
        for sub in gone:
            subs.remove(sub)
            self._retire(sub)
        if subs:
            return
        del table[name]
        if self._started and not self._stopping:
            await self._release_if_unused(kind, name)

    async def _after_start_in_progress(self) -> None:
        # A start() confirming the recorded names is in progress: change them after it,
        # so each name is either in its snapshot or handled as after a start.
        lock = self._lifecycle_lock
        if not self._started and lock is not None and lock.locked():
            async with lock:
                pass
            self._check_open()

    async def _release_if_unused(self, kind: str, name: str) -> None:
        """Unsubscribe the transport from ``name`` if no handler wants it any more."""
        key = (kind, name)
        table = self._channels if kind == "channel" else self._patterns
        async with self._serialised(key):
            if table.get(name) or key not in self._wired or self._stopping:
                return  # subscribed again meanwhile, or never confirmed
            self._wired.discard(key)
            self._changing += 1
            self._unblock_reader()
            try:
                if kind == "channel":
                    await self._transport.unsubscribe([self._prefix + name])
                else:
                    await self._transport.punsubscribe([self._pattern_prefix + name])
            finally:
                self._changing -= 1

    @contextlib.asynccontextmanager
    async def _serialised(self, key: tuple[str, str]) -> AsyncIterator[None]:
        # Transport calls for one name run one at a time, in call order (asyncio.Lock is
        # FIFO): otherwise a subscribe could return on the confirmation of a call that an
        # unsubscribe has already undone.
        entry = self._name_locks.get(key)
        if entry is None:
            entry = self._name_locks[key] = _NameLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._name_locks[key]

    def _drop(self, kind: str, name: str, sub: _Subscriber) -> None:
        """Take back ``sub`` whose subscription failed."""
        table = self._channels if kind == "channel" else self._patterns
        subs = table.get(name)
        if subs is None or sub not in subs:
            return
        subs.remove(sub)
        self._retire(sub)
        if subs:
            return
        del table[name]
        if (kind, name) in self._wired and not self._stopping:
            # Confirmed for another handler that has left since: release it, later (this
            # task may be being cancelled).
            task = asyncio.get_running_loop().create_task(self._release_if_unused(kind, name))
            self._callback_tasks.add(task)
            task.add_done_callback(self._callback_tasks.discard)

    def _retire(self, sub: _Subscriber) -> None:
        # The consumer finishes what is buffered, then ends (it sees key removed); until
        # then stop() still waits for it (and counts what it could not handle).
        sub.key = (sub.key[0], "")
        task = sub.task
        if task is not None and not task.done():
            self._retired.add(sub)
            task.add_done_callback(lambda _: self._retired.discard(sub))
        self._wake(sub)
        room = sub.room
        if room is not None and not room.done():
            room.set_result(None)  # a reader blocked on this buffer moves on

    def _unblock_reader(self) -> None:
        # A subscription change is about to wait for its confirmation, which only the
        # reader can see: a reader blocked on a full buffer (``block``) must read on.
        blocked = self._blocked_on
        if blocked is not None:
            room = blocked.room
            if room is not None and not room.done():
                room.set_result(None)

    # -- middleware ---------------------------------------------------------------------

    def add_middleware(self, middleware: object) -> None:
        """Run ``middleware``'s hooks around every publish and every handler call of this
        PubSub (``meetq.core.middleware``: the same four hooks as a ``MessageQueue``'s,
        with the channel for the queue, a ``PubSubMessage``, and a ``Broadcast`` for the
        delivery; tracing uses this)."""
        self._middleware.add(middleware)

    # -- publishing ---------------------------------------------------------------------

    async def publish(self, channel: str, message: PubSubMessage) -> int:
        """Send ``message`` to every subscriber of ``channel``; return how many
        connections received it (Redis's count; 0 when nobody listens)."""
        self._check_open()
        _check_channel("channel", channel)
        if self._middleware.publishing:
            return (await self._publish_observed(channel, [message], single=True))[0]
        data = self._encode(message, "message")
        count = await self._transport.publish(self._prefix + channel, data)
        self._published += 1
        return count

    async def publish_batch(self, channel: str, messages: Sequence[PubSubMessage]) -> list[int]:
        """Send several messages in one round trip (a pipeline), in order.

        Every message is validated and encoded first: if one is bad, nothing is sent.
        Returns the receiver count of each message.
        """
        self._check_open()
        _check_channel("channel", channel)
        if isinstance(messages, PubSubMessage | str | bytes) or not isinstance(messages, Iterable):
            raise ValidationError("messages", messages, "expected a sequence of PubSubMessage")
        if self._middleware.publishing and messages:
            return await self._publish_observed(channel, messages, single=False)
        encoded = [self._encode(m, f"messages[{i}]") for i, m in enumerate(messages)]
        if not encoded:
            return []
        counts = await self._transport.publish_many(self._prefix + channel, encoded)
        self._published += len(encoded)
        return counts

    async def _publish_observed(
        self, channel: str, messages: Sequence[PubSubMessage], *, single: bool
    ) -> list[int]:
        chain = self._middleware
        shown = [
            chain.before_publish(channel, m) if isinstance(m, PubSubMessage) else m
            for m in messages
        ]
        try:
            encoded = [
                self._encode(m, "message" if single else f"messages[{i}]")
                for i, m in enumerate(shown)
            ]
            if single:
                counts = [await self._transport.publish(self._prefix + channel, encoded[0])]
            else:
                counts = await self._transport.publish_many(self._prefix + channel, encoded)
        except BaseException as exc:
            for m in shown:
                if isinstance(m, PubSubMessage):
                    chain.after_publish(channel, m, None, exc)
            raise
        self._published += len(encoded)
        for m in shown:
            chain.after_publish(channel, m, m.id, None)
        return counts

    def _encode(self, message: object, field: str) -> bytes:
        if not isinstance(message, PubSubMessage):
            raise ValidationError(field, message, "expected a PubSubMessage")
        return encode_pubsub_message(message, self._serializer, source=self.source)

    def _check_open(self) -> None:
        if self._stopping:
            raise ClosedError("this PubSub is stopped; create a new one")

    # -- receiving ----------------------------------------------------------------------

    async def _read(self) -> None:
        """Route received messages until the transport closes; never die silently.

        An unexpected error (a bug, a transport failing in a new way) is logged and the
        reader starts over on a fresh ``messages()``: every subscription lives on it.
        """
        failures = 0
        while True:
            received = self._received
            try:
                await self._route()
            except Exception:
                if self._stopping:
                    return
                failures = 1 if self._received != received else failures + 1
                delay = _READER_RESTART.delay(failures)
                log.exception(
                    "meetq pubsub reader failed unexpectedly; restarting it in %.2fs "
                    "(messages arriving meanwhile wait on the connection)",
                    delay,
                )
                await asyncio.sleep(delay)
            else:
                return  # the transport was closed

    async def _route(self) -> None:
        prefix = self._prefix
        cut = len(prefix)
        pattern_prefix = self._pattern_prefix
        pattern_cut = len(pattern_prefix)
        serializer = self._serializer
        channels = self._channels
        patterns = self._patterns
        limit = self.config.subscriber_buffer
        yield_at = self._yield_at
        wake = self._wake
        stream = self._transport.messages()
        try:
            async for item in stream:
                self._received += 1
                channel = item.channel
                name = channel[cut:] if channel.startswith(prefix) else channel
                if item.pattern is None:
                    subs = channels.get(name)
                else:
                    pattern = item.pattern
                    if pattern.startswith(pattern_prefix):
                        pattern = pattern[pattern_cut:]
                    subs = patterns.get(pattern)
                if not subs:
                    continue  # unsubscribed while the message was in flight
                try:
                    if not name.isascii():
                        name.encode()  # a channel name that is not text (foreign bytes)
                    message = decode_pubsub_message(item.data, serializer, channel=name)
                except Exception as exc:
                    self._decode_error(item, exc)
                    continue
                crowded = False
                for sub in tuple(subs):
                    buffer = sub.buffer
                    if len(buffer) < limit:
                        # The common case inline: no coroutine per message and subscriber.
                        buffer.append(message)
                        wake(sub)
                        crowded = crowded or len(buffer) > yield_at
                    else:
                        await self._overflow(sub, message)
                        crowded = True
                if crowded:
                    # A burst already read from the socket is routed without the reader
                    # ever suspending; give the consumers a turn before buffers overflow.
                    await asyncio.sleep(0)
        finally:
            if isinstance(stream, AsyncGenerator):
                await stream.aclose()

    def _decode_error(self, item: TransportMessage, exc: Exception) -> None:
        self._decode_errors += 1
        if self._decode_log.tick():
            log.warning(
                "meetq pubsub: cannot decode a message on %r (%d undecodable so far): %r; skipped",
                item.channel,
                self._decode_errors,
                exc,
            )

    async def _overflow(self, sub: _Subscriber, message: PubSubMessage) -> None:
        """``message`` found ``sub``'s buffer full: apply ``subscriber_overflow``."""
        buffer = sub.buffer
        if self.config.subscriber_overflow == "block":
            # While a subscription change of this PubSub waits for its confirmation the
            # reader must read on (the confirmation arrives on the same connection), so
            # then a buffer may exceed its size instead; see _unblock_reader.
            while len(buffer) >= self.config.subscriber_buffer and sub.key[1]:
                if self._changing:
                    break
                room = sub.room = asyncio.get_running_loop().create_future()
                self._blocked_on = sub
                try:
                    await room
                finally:
                    self._blocked_on = None
            buffer.append(message)
        else:
            if self.config.subscriber_overflow == "drop_oldest":
                buffer.popleft()
                buffer.append(message)
            self._count_drop(sub)
        self._wake(sub)

    def _count_drop(self, sub: _Subscriber) -> None:
        self._dropped += 1
        dropped = sub.drop_log.tick()
        if dropped:
            log.warning(
                "meetq pubsub: handler %r on %s %r is behind (buffer of %d full): "
                "%d message(s) dropped (%s)",
                sub.handler,
                sub.key[0],
                sub.key[1],
                self.config.subscriber_buffer,
                dropped,
                self.config.subscriber_overflow,
            )

    @staticmethod
    def _wake(sub: _Subscriber) -> None:
        waiter = sub.waiter
        if waiter is not None:
            sub.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _start_consumer(self, sub: _Subscriber) -> None:
        sub.task = asyncio.create_task(
            self._consume(sub), name=f"meetq-pubsub-{sub.key[0]}-{sub.key[1]}"
        )

    async def _consume(self, sub: _Subscriber) -> None:
        buffer = sub.buffer
        handler = sub.handler
        run = sub.run
        loop = asyncio.get_running_loop()
        while True:
            while buffer:
                message = buffer.popleft()
                room = sub.room
                if room is not None:
                    sub.room = None
                    if not room.done():
                        room.set_result(None)
                try:
                    if self._middleware.processing:
                        await self._run_observed(sub, message)
                    else:
                        await run(message)
                except BaseException as exc:
                    failure = user_failure(exc)  # raises a cancellation of this consumer
                    self._failed += 1
                    log.error(
                        "meetq pubsub handler %r failed on %r message %s (channel %r): %s",
                        handler,
                        message.type,
                        message.id,
                        message.channel,
                        failure.error,
                        exc_info=failure.exc,
                    )
                else:
                    self._processed += 1
            if self._stopping or not sub.key[1]:
                return
            waiter = sub.waiter = loop.create_future()
            await waiter

    async def _run_observed(self, sub: _Subscriber, message: PubSubMessage) -> None:
        """``sub``'s handler on ``message`` between the middleware's process hooks."""
        chain = self._middleware
        seen = Broadcast(message.channel or "", sub.key[1], self.source, message)
        chain.before_process(seen)
        try:
            await sub.run(message)
        except BaseException as exc:
            try:
                error = user_failure(exc).error
            except BaseException:  # this consumer cancelled (stop): not the handler's doing
                chain.after_process(seen, "release", None)
                raise
            chain.after_process(seen, "drop", error)
            raise
        chain.after_process(seen, "ack", None)

    # -- reconnects and stats -----------------------------------------------------------

    async def _reconnected(self) -> None:
        log.info(
            "meetq pubsub reconnected (%d reconnect(s)); messages published meanwhile are lost",
            self._transport.reconnects,
        )
        for callback in list(self._reconnect_callbacks):
            try:
                await call_user(callback, is_async=is_async_callable(callback))
            except UserCodeFailed as failure:
                log.error(
                    "meetq pubsub on_reconnect callback %r failed: %s",
                    callback,
                    failure.error,
                    exc_info=failure.exc,
                )

    async def stats(self) -> dict[str, int]:
        """Counters: the seed's ``total_published`` (messages this object sent),
        ``total_received`` (messages that arrived), ``total_processed`` / ``total_failed``
        (handler calls that returned / raised), ``channel_count`` (channels with a
        handler); plus ``pattern_count``, ``dropped`` (discarded by overflow or stop),
        ``decode_errors`` and ``reconnects``."""
        return {
            "total_published": self._published,
            "total_received": self._received,
            "total_processed": self._processed,
            "total_failed": self._failed,
            "channel_count": len(self._channels),
            "pattern_count": len(self._patterns),
            "dropped": self._dropped,
            "decode_errors": self._decode_errors,
            "reconnects": self._transport.reconnects,
        }


# The rule lives in core: the sync publisher (meetq.sync) checks channels with it too.
_check_channel = check_channel

