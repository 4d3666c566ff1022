"""In-process Pub/Sub: a broker shared by every transport made from one memory backend.

Features: the ``PubSubTransport`` contract within one process and one event loop —
confirmed (immediate) subscriptions, Redis-style glob patterns, ``publish`` returning how
many receivers got the message, counted the way Redis counts them (a transport subscribed
to a channel and to a matching pattern receives, and counts, twice).
Capabilities: none; nothing crosses the process and nothing ever reconnects.
Config keys: ``event_bus.type: memory``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import lru_cache

from meetq.core.errors import ClosedError
from meetq.core.protocols import TransportMessage

__all__ = ["MemoryBroker", "MemoryPubSubTransport", "glob_to_regex"]


@lru_cache(maxsize=1024)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Redis ``PSUBSCRIBE`` glob.

    Supports ``*``, ``?``, ``[abc]``, ``[^a]``, ``[a-z]`` and ``\\`` escapes.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end]
                negate = body.startswith("^")
                if negate:
                    body = body[1:]
                escaped = "".join(c if c == "-" else re.escape(c) for c in body)
                out.append(f"[{'^' if negate else ''}{escaped}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL)


class MemoryBroker:
    """Routes published bytes to every subscribed transport made by ``transport()``."""

    def __init__(self) -> None:
        self._transports: list[MemoryPubSubTransport] = []

    def transport(self) -> MemoryPubSubTransport:
        """A new transport (one "connection") attached to this broker."""
        transport = MemoryPubSubTransport(self)
        self._transports.append(transport)
        return transport

    def _detach(self, transport: MemoryPubSubTransport) -> None:
        if transport in self._transports:
            self._transports.remove(transport)

    def publish(self, channel: str, data: bytes) -> int:
        """Deliver to each subscription matching ``channel``; return the deliveries."""
        receivers = 0
        for transport in self._transports:
            if channel in transport._channels:
                transport._inbox.put_nowait(TransportMessage(channel=channel, data=data))
                receivers += 1
            for pattern in transport._patterns:
                if glob_to_regex(pattern).fullmatch(channel):
                    transport._inbox.put_nowait(
                        TransportMessage(channel=channel, data=data, pattern=pattern)
                    )
                    receivers += 1
        return receivers


class MemoryPubSubTransport:
    """One in-process "connection" to a ``MemoryBroker``.

    Subscriptions take effect at once (so they are confirmed when the call returns).
    Received messages wait in an unbounded inbox until ``messages()`` reads them; the
    ``PubSub`` front end drains it immediately into its bounded per-handler buffers.
    """

    name = "memory"

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        self._inbox: asyncio.Queue[TransportMessage | None] = asyncio.Queue()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this pub/sub transport is closed")

    async def publish(self, channel: str, data: bytes) -> int:
        self._check_open()
        return self._broker.publish(channel, data)

    async def publish_many(self, channel: str, items: Sequence[bytes]) -> list[int]:
        self._check_open()
        return [self._broker.publish(channel, data) for data in items]

    async def subscribe(self, channels: Sequence[str]) -> None:
        self._check_open()
        self._channels.update(channels)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        self._channels.difference_update(channels)

    async def psubscribe(self, patterns: Sequence[str]) -> None:
        self._check_open()
        self._patterns.update(patterns)

    async def punsubscribe(self, patterns: Sequence[str]) -> None:
        self._patterns.difference_update(patterns)

    async def messages(self) -> AsyncIterator[TransportMessage]:
        """Received messages in arrival order; ends when the transport is closed."""
        inbox = self._inbox
        while True:
            item = await inbox.get()
            if item is None:
                return
            yield item

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Accepted for the contract; an in-process broker never disconnects."""

    @property
    def reconnects(self) -> int:
        return 0

    async def aclose(self) -> None:
        """Leave the broker; ``messages()`` ends. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._channels.clear()
        self._patterns.clear()
        self._broker._detach(self)
        self._inbox.put_nowait(None)
