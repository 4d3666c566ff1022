"""The example pub/sub: one broker per backend, one transport per ``PubSub``.

``PubSubTransport`` rules and where each is kept:

- ``subscribe``/``psubscribe`` are confirmed when they return: the broker routes by the
  transport's sets, which change at once.
- ``publish`` returns the receiving subscriptions, counted as Redis counts them: a
  transport on a channel and on a matching pattern receives (and counts) twice.
- Patterns are Redis ``PSUBSCRIBE`` globs, matched on UTF-8 bytes (``glob_match``).
- ``messages()`` yields what arrived, in order, and ends once the transport is closed.
- Nothing here disconnects: ``reconnects`` stays 0 and an ``on_reconnect`` callback is
  accepted and never called.
- After ``aclose()``, publishing or subscribing raises ``ClosedError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from meetq.backend import ClosedError, TransportMessage

__all__ = ["ExampleBroker", "ExamplePubSubTransport", "glob_match"]

STAR, QUESTION, OPEN, CLOSE, CARET, DASH, BACKSLASH = b"*?[]^-\\"


def glob_match(pattern: bytes, text: bytes) -> bool:
    """True when ``text`` matches the Redis glob ``pattern``.

    ``*`` any run of bytes, ``?`` one byte, ``\\x`` a literal x, ``[...]`` one byte of a
    class (``^`` negates; ``a-z`` ranges, reversed ones too; an unclosed class ends with
    the pattern; ``[]`` matches nothing). Backtracks to the last ``*`` on a mismatch.
    """
    p = t = 0
    star, resume = -1, 0  # the last '*' seen, and where the text resumes after it
    while t < len(text):
        if p < len(pattern) and pattern[p] == STAR:
            star, resume, p = p, t, p + 1
            continue
        if p < len(pattern):
            hit, after = _match_one(pattern, p, text[t])
            if hit:
                p, t = after, t + 1
                continue
        if star < 0:
            return False
        resume += 1  # let the last '*' take one more byte and try again
        p, t = star + 1, resume
    return all(char == STAR for char in pattern[p:])


def _match_one(pattern: bytes, p: int, byte: int) -> tuple[bool, int]:
    """Whether the one-byte token at ``pattern[p]`` matches ``byte``; the next token."""
    n = len(pattern)
    if pattern[p] == QUESTION:
        return True, p + 1
    if pattern[p] == BACKSLASH and p + 1 < n:
        return pattern[p + 1] == byte, p + 2
    if pattern[p] != OPEN:
        return pattern[p] == byte, p + 1
    p += 1
    negate = p < n and pattern[p] == CARET
    p += negate
    hit = False
    while p < n and pattern[p] != CLOSE:
        if pattern[p] == BACKSLASH and p + 1 < n:
            hit, p = hit or pattern[p + 1] == byte, p + 2
        elif p + 2 < n and pattern[p + 1] == DASH:
            low, high = sorted((pattern[p], pattern[p + 2]))
            hit, p = hit or low <= byte <= high, p + 3
        else:
            hit, p = hit or pattern[p] == byte, p + 1
    return hit != negate, min(p + 1, n)


class ExampleBroker:
    """Routes published bytes to every transport made by ``transport()``."""

    def __init__(self) -> None:
        self.transports: list[ExamplePubSubTransport] = []

    def transport(self) -> ExamplePubSubTransport:
        transport = ExamplePubSubTransport(self)
        self.transports.append(transport)
        return transport

    async def aclose(self) -> None:
        for transport in list(self.transports):
            await transport.aclose()

    def publish(self, channel: str, data: bytes) -> int:
        wire = channel.encode()
        receivers = 0
        for transport in self.transports:
            if channel in transport.channels:
                transport.inbox.put_nowait(TransportMessage(channel=channel, data=data))
                receivers += 1
            for pattern in transport.patterns:
                if glob_match(pattern.encode(), wire):
                    message = TransportMessage(channel=channel, data=data, pattern=pattern)
                    transport.inbox.put_nowait(message)
                    receivers += 1
        return receivers


class ExamplePubSubTransport:
    """One "connection" to an ``ExampleBroker``; received messages wait in ``inbox``."""

    name = "example"

    def __init__(self, broker: ExampleBroker) -> None:
        self.broker = broker
        self.channels: set[str] = set()
        self.patterns: set[str] = set()
        # Unbounded: the PubSub front end drains it at once into its bounded buffers.
        self.inbox: asyncio.Queue[TransportMessage | None] = asyncio.Queue()
        self.closed = False

    def _check_open(self) -> None:
        if self.closed:
            raise ClosedError("this example pub/sub transport is closed")

    async def publish(self, channel: str, data: bytes) -> int:
        self._check_open()
        return self.broker.publish(channel, data)

    async def publish_many(self, channel: str, items: Sequence[bytes]) -> list[int]:
        self._check_open()
        return [self.broker.publish(channel, data) for data in items]

    async def subscribe(self, channels: Sequence[str]) -> None:
        self._check_open()
        self.channels.update(channels)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        self.channels.difference_update(channels)

    async def psubscribe(self, patterns: Sequence[str]) -> None:
        self._check_open()
        self.patterns.update(patterns)

    async def punsubscribe(self, patterns: Sequence[str]) -> None:
        self.patterns.difference_update(patterns)

    async def messages(self) -> AsyncIterator[TransportMessage]:
        while True:
            item = await self.inbox.get()
            if item is None:  # closed: put the mark back so every later reader ends too
                self.inbox.put_nowait(None)
                return
            yield item

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Accepted; an in-process broker never disconnects, so it is never called."""

    @property
    def reconnects(self) -> int:
        return 0

    async def aclose(self) -> None:
        """Leave the broker and end ``messages()``. Idempotent."""
        if not self.closed:
            self.closed = True
            self.broker.transports.remove(self)
            self.inbox.put_nowait(None)
