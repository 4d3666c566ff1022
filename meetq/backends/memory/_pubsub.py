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
def glob_to_regex(pattern: str) -> re.Pattern[bytes]:
    """Compile a Redis ``PSUBSCRIBE`` glob into a regex over the UTF-8 channel bytes.

    Redis never refuses a pattern, so neither does this: it follows Redis's matcher
    (``stringmatchlen``) rule for rule, on bytes as Redis does (``?`` is one byte).
    ``*``, ``?``, ``\\x`` escapes and ``[...]`` classes with ``^``, ranges and escapes;
    the corner cases read as Redis reads them: a reversed range ``[b-a]`` is ``[a-b]``,
    an unclosed ``[`` runs to the end of the pattern, ``[]`` matches nothing and
    ``[^]`` any one byte. The contract suite checks both backends agree on these.
    """
    raw = pattern.encode()
    out: list[bytes] = []
    i, n = 0, len(raw)
    while i < n:
        char = raw[i]
        if char == _STAR:
            out.append(b".*")
        elif char == _QUESTION:
            out.append(b".")
        elif char == _OPEN:
            i += 1
            negate = i < n and raw[i] == _CARET
            if negate:
                i += 1
            ranges: list[tuple[int, int]] = []
            while True:
                if i < n and raw[i] == _BACKSLASH and n - i >= 2:
                    i += 1
                    ranges.append((raw[i], raw[i]))
                elif i < n and raw[i] == _CLOSE:
                    break
                elif i >= n:  # unclosed: the class ends with the pattern
                    i -= 1
                    break
                elif n - i >= 3 and raw[i + 1] == _DASH:
                    low, high = sorted((raw[i], raw[i + 2]))
                    ranges.append((low, high))
                    i += 2
                else:
                    ranges.append((raw[i], raw[i]))
                i += 1
            out.append(_byte_class(ranges, negate))
        elif char == _BACKSLASH and n - i >= 2:
            i += 1
            out.append(re.escape(raw[i : i + 1]))
        else:
            out.append(re.escape(raw[i : i + 1]))
        i += 1
    return re.compile(b"".join(out), re.DOTALL)


_STAR, _QUESTION, _OPEN, _CLOSE, _CARET, _DASH, _BACKSLASH = b"*?[]^-\\"


def _byte_class(ranges: list[tuple[int, int]], negate: bool) -> bytes:
    if not ranges:
        return b"." if negate else b"(?!)"
    body = b"".join(b"\\x%02x-\\x%02x" % pair for pair in ranges)
    return b"[" + (b"^" if negate else b"") + body + b"]"


class MemoryBroker:
    """Routes published bytes to every subscribed transport made by ``transport()``."""

    def __init__(self) -> None:
        self._transports: list[MemoryPubSubTransport] = []

    def transport(self) -> MemoryPubSubTransport:
        """A new transport (one "connection") attached to this broker."""
        transport = MemoryPubSubTransport(self)
        self._transports.append(transport)
        return transport

    async def aclose(self) -> None:
        """Close every transport attached (the backend is closing)."""
        for transport in list(self._transports):
            await transport.aclose()

    def _detach(self, transport: MemoryPubSubTransport) -> None:
        if transport in self._transports:
            self._transports.remove(transport)

    def publish(self, channel: str, data: bytes) -> int:
        """Deliver to each subscription matching ``channel``; return the deliveries."""
        receivers = 0
        wire = channel.encode()  # patterns match bytes, as in Redis
        for transport in self._transports:
            if channel in transport._channels:
                transport._inbox.put_nowait(TransportMessage(channel=channel, data=data))
                receivers += 1
            for pattern in transport._patterns:
                if glob_to_regex(pattern).fullmatch(wire):
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
        for pattern in patterns:
            glob_to_regex(pattern)  # compiled now, so no pattern can fail a later publish
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
