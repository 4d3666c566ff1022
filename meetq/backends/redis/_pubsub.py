"""Redis Pub/Sub transport: one connection per transport, one reader, automatic reconnect.

Features: the ``PubSubTransport`` contract on Redis ``PUBLISH``/``SUBSCRIBE``/``PSUBSCRIBE``
(also on fakeredis). Subscription calls wait for Redis's confirmation, which the reader
(the consumer of ``messages()``) sees on the same connection. When the connection drops
the reader reconnects with exponential backoff and jitter, re-subscribes every channel
and pattern, counts the reconnect and, once Redis confirmed them all, calls the
``on_reconnect`` callbacks. An idle connection is probed with ``PING`` so a silently dead
one is noticed too.
Capabilities: ``cross_process``. Delivery is at most once: what is published while the
connection is down is lost.
Config keys: ``event_bus.reconnect_backoff_base`` / ``reconnect_backoff_max`` (through
the backend); the ``redis:`` section for the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import redis.exceptions
from redis.asyncio.client import PubSub as PubSubConnection

from meetq.backends.redis._backend import translate_errors
from meetq.core.errors import BackendUnavailableError, ClosedError
from meetq.core.protocols import TransportMessage

__all__ = ["RedisPubSubTransport"]

log = logging.getLogger("meetq.redis.pubsub")

# How long a subscription call waits for Redis to confirm it.
CONFIRM_TIMEOUT = 30.0
# After this long without traffic the watchdog sends PING; a second silent period with
# the PING unanswered means the connection is dead.
IDLE_PROBE = 15.0

_MESSAGE = {b"message": 1, "message": 1, b"pmessage": 2, "pmessage": 2}
_CONFIRMATIONS = frozenset({"subscribe", "psubscribe", "unsubscribe", "punsubscribe"})
_DRIVER_ERRORS = (redis.exceptions.RedisError, OSError)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _data(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class RedisPubSubTransport:
    """Pub/Sub over one dedicated connection of ``client`` (``redis.asyncio.Redis``).

    ``backoff`` is (base, max) seconds: attempt n waits a random time between half and
    all of ``min(max, base * 2**n)`` (jitter spreads the reconnects of many processes).
    """

    name = "redis"

    def __init__(self, client: Any, *, backoff: tuple[float, float] = (0.1, 5.0)) -> None:
        self._client = client
        self._backoff_base, self._backoff_max = backoff
        self._ps: Any = None  # redis.asyncio.client.PubSub of the current connection
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        # (reply kind, name) -> futures of calls waiting for that confirmation, FIFO.
        self._waiting: dict[tuple[str, str], deque[asyncio.Future[None]]] = {}
        # Confirmations still expected after a reconnect; callbacks run when it empties.
        self._resubscribing: set[tuple[str, str]] = set()
        self._connected = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._reconnecting = False
        self._reconnects = 0
        self._callbacks: list[Callable[[], Awaitable[None]]] = []
        self._callback_tasks: set[asyncio.Task[None]] = set()
        self._ping_outstanding = False
        self._traffic = 0  # responses read; the watchdog compares it between periods
        self._pool: Any = None
        self._watchdog: asyncio.Task[None] | None = None
        self._closed = False

    # -- publishing ---------------------------------------------------------------------

    async def publish(self, channel: str, data: bytes) -> int:
        self._check_open()
        with translate_errors("PUBLISH"):
            return int(await self._client.publish(channel, data))

    async def publish_many(self, channel: str, items: Sequence[bytes]) -> list[int]:
        """All ``items`` in one pipelined round trip (no MULTI: Pub/Sub needs no atomicity)."""
        self._check_open()
        with translate_errors("PUBLISH (pipeline)"):
            async with self._client.pipeline(transaction=False) as pipe:
                for data in items:
                    pipe.publish(channel, data)
                results = await pipe.execute()
        return [int(r) for r in results]

    # -- subscriptions ------------------------------------------------------------------

    async def subscribe(self, channels: Sequence[str]) -> None:
        await self._change("subscribe", self._channels, channels, add=True)

    async def psubscribe(self, patterns: Sequence[str]) -> None:
        await self._change("psubscribe", self._patterns, patterns, add=True)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        await self._change("unsubscribe", self._channels, channels, add=False)

    async def punsubscribe(self, patterns: Sequence[str]) -> None:
        await self._change("punsubscribe", self._patterns, patterns, add=False)

    async def _change(
        self, kind: str, wanted: set[str], names: Sequence[str], *, add: bool
    ) -> None:
        names = list(dict.fromkeys(names))
        if not names:
            return
        if add:
            self._check_open()
            if self._reconnecting:
                raise BackendUnavailableError(
                    f"redis: cannot {kind} while the pub/sub connection is down "
                    "(reconnecting); retry later",
                    backend="redis",
                )
            wanted.update(names)
        else:
            wanted.difference_update(names)
            if self._ps is None or self._reconnecting or self._closed:
                return  # the next connection is made without them
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in names]
        for name, future in zip(names, futures, strict=True):
            self._waiting.setdefault((kind, name), deque()).append(future)
        try:
            async with self._send_lock:
                if self._ps is None:
                    self._ps = self._new_pubsub()
                with translate_errors(kind.upper()):
                    await self._ps.execute_command(kind.upper(), *names)
            self._connected.set()
        except BaseException:
            self._forget(kind, names, futures)
            if add:
                wanted.difference_update(names)
                if not self._channels and not self._patterns and not self._connected.is_set():
                    await self._drop_connection()
                raise
            return  # unsubscribing from a broken connection: its replacement lacks them
        try:
            async with asyncio.timeout(CONFIRM_TIMEOUT):
                await asyncio.gather(*futures)
        except TimeoutError:
            self._forget(kind, names, futures)
            raise BackendUnavailableError(
                f"redis: {kind} of {names!r} was not confirmed within {CONFIRM_TIMEOUT:g}s "
                "(is the reader running, i.e. was the PubSub started?)",
                backend="redis",
            ) from None

    def _forget(self, kind: str, names: list[str], futures: list[asyncio.Future[None]]) -> None:
        for name, future in zip(names, futures, strict=True):
            queue = self._waiting.get((kind, name))
            if queue is not None and future in queue:
                queue.remove(future)
                if not queue:
                    del self._waiting[(kind, name)]
            future.cancel()

    def _confirmed(self, kind: str, name: str) -> None:
        queue = self._waiting.get((kind, name))
        if queue:
            future = queue.popleft()
            if not queue:
                del self._waiting[(kind, name)]
            if not future.done():
                future.set_result(None)
        if self._resubscribing:
            self._resubscribing.discard((kind, name))
            if not self._resubscribing:
                self._run_callbacks()

    # -- receiving ----------------------------------------------------------------------

    async def messages(self) -> AsyncIterator[TransportMessage]:
        """Received messages in arrival order, across reconnects; ends at ``aclose()``.

        Must be consumed for subscriptions to be confirmed (the reader sees the replies).
        """
        while not self._closed:
            ps = self._ps
            if ps is None or not self._connected.is_set():
                await self._connected.wait()
                continue
            try:
                # No read timeout on this connection (see _new_pubsub); the watchdog
                # notices a silent one.
                response = await ps.parse_response(block=True)
            except _DRIVER_ERRORS as exc:
                if self._closed:
                    return
                await self._reconnect(exc)
                continue
            if response is None:
                continue
            self._traffic += 1
            kind = _MESSAGE.get(response[0])
            if kind == 1:
                yield TransportMessage(channel=_text(response[1]), data=_data(response[2]))
            elif kind == 2:
                yield TransportMessage(
                    channel=_text(response[2]), data=_data(response[3]), pattern=_text(response[1])
                )
            elif isinstance(response, list | tuple) and len(response) >= 2:
                reply = _text(response[0])
                if reply in _CONFIRMATIONS and response[1] is not None:
                    self._confirmed(reply, _text(response[1]))

    def _new_pubsub(self) -> Any:
        # A pool of its own, copied from the client's but without socket_timeout: a
        # subscriber is idle for long stretches, and a read timeout would either drop it
        # or (as a per-read timer) cost about a third of the delivery rate. Liveness is
        # checked by the watchdog instead.
        if self._pool is None:
            shared = self._client.connection_pool
            kwargs = dict(shared.connection_kwargs)
            kwargs["socket_timeout"] = None
            self._pool = type(shared)(connection_class=shared.connection_class, **kwargs)
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(
                self._watch(), name="meetq-redis-pubsub-watchdog"
            )
        return PubSubConnection(self._pool)

    async def _watch(self) -> None:
        """PING an idle connection; if a PING stays unanswered for a whole period, cut
        the connection so the reader reconnects (a peer that vanished sends no FIN)."""
        seen = -1
        while not self._closed:
            await asyncio.sleep(IDLE_PROBE)
            ps = self._ps
            if ps is None or self._reconnecting or self._traffic != seen:
                seen = self._traffic
                self._ping_outstanding = False
                continue
            if self._ping_outstanding:
                log.warning("meetq redis pub/sub: PING unanswered for %.0fs; reconnecting",
                            IDLE_PROBE)
                self._ping_outstanding = False
                connection = getattr(ps, "connection", None)
                if connection is not None:
                    with contextlib.suppress(*_DRIVER_ERRORS):
                        await connection.disconnect()
                continue
            self._ping_outstanding = True
            try:
                async with self._send_lock:
                    await ps.execute_command("PING")
            except _DRIVER_ERRORS:
                continue  # the reader sees the broken connection too

    async def _reconnect(self, exc: BaseException) -> None:
        self._reconnecting = True
        self._connected.clear()
        self._ping_outstanding = False
        log.warning(
            "meetq redis pub/sub connection lost (%s); reconnecting. Messages published "
            "until it is back are lost.",
            exc,
        )
        await self._drop_connection()
        # Pending unsubscribes are done: the new connection is made without those names.
        for (kind, _name), queue in list(self._waiting.items()):
            if kind in ("unsubscribe", "punsubscribe"):
                for future in queue:
                    if not future.done():
                        future.set_result(None)
                del self._waiting[(kind, _name)]
        attempt = 0
        while not self._closed:
            cap = min(self._backoff_max, self._backoff_base * (2**attempt))
            attempt += 1
            await asyncio.sleep(random.uniform(cap / 2, cap))
            channels, patterns = sorted(self._channels), sorted(self._patterns)
            if not channels and not patterns:
                # Nothing to restore: connect again on the next subscribe.
                self._reconnecting = False
                return
            ps = self._new_pubsub()
            try:
                async with self._send_lock:
                    if channels:
                        await ps.execute_command("SUBSCRIBE", *channels)
                    if patterns:
                        await ps.execute_command("PSUBSCRIBE", *patterns)
            except _DRIVER_ERRORS as retry_exc:
                await _close_quietly(ps)
                log.info("meetq redis pub/sub reconnect attempt %d failed: %s", attempt, retry_exc)
                continue
            self._ps = ps
            self._reconnects += 1
            self._resubscribing = {("subscribe", c) for c in channels} | {
                ("psubscribe", p) for p in patterns
            }
            self._reconnecting = False
            self._connected.set()
            log.warning(
                "meetq redis pub/sub reconnected after %d attempt(s); re-subscribed %d "
                "channel(s) and %d pattern(s)",
                attempt,
                len(channels),
                len(patterns),
            )
            return

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` after each reconnect once every re-subscription is confirmed."""
        self._callbacks.append(callback)

    def _run_callbacks(self) -> None:
        for callback in self._callbacks:
            task = asyncio.get_running_loop().create_task(_contained(callback))
            self._callback_tasks.add(task)
            task.add_done_callback(self._callback_tasks.discard)

    @property
    def reconnects(self) -> int:
        """How many times the connection was lost and restored."""
        return self._reconnects

    # -- closing ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this pub/sub transport is closed")

    async def _drop_connection(self) -> None:
        ps, self._ps = self._ps, None
        self._connected.clear()
        if ps is not None:
            await _close_quietly(ps)

    async def aclose(self) -> None:
        """Close the connection; ``messages()`` ends. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._connected.set()  # wake a reader waiting for a first subscription
        for queue in self._waiting.values():
            for future in queue:
                future.cancel()
        self._waiting.clear()
        for task in list(self._callback_tasks):
            task.cancel()
        await asyncio.gather(*self._callback_tasks, return_exceptions=True)
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        ps, self._ps = self._ps, None
        if ps is not None:
            await _close_quietly(ps)
        if self._pool is not None:
            with contextlib.suppress(*_DRIVER_ERRORS):
                await self._pool.disconnect()


async def _close_quietly(ps: Any) -> None:
    # Closing a connection that is already broken may raise; there is nothing to save.
    with contextlib.suppress(*_DRIVER_ERRORS):
        await ps.aclose()


async def _contained(callback: Callable[[], Awaitable[None]]) -> None:
    try:
        await callback()
    except Exception:
        log.exception("meetq redis pub/sub on_reconnect callback %r failed", callback)
