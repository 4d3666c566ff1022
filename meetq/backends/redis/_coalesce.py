"""Auto-pipelining: calls that arrive while one round trip is in flight go out together.

Design (why it looks like this): many tasks publishing at once used to cost one round
trip and one pooled connection each, so a hundred concurrent publishers ran out of
connections and each paid a full network hop. ioredis and BullMQ coalesce instead, and
so does this: the first call finds nothing in flight and is sent at once, in its own
task (a lone publish waits for no batch window, no timer, no other task); calls made
while it is on the wire queue up, and when it returns one task sends all of them in one
write on one connection and hands each caller its own reply. What the write carries is
``send_many``'s choice: the Redis work queue runs its single publishes as one
``enqueue.lua`` call (one script run costs Redis about a third of one ``enqueue_one``
run each), and if the server refuses that call, sends each again alone, so one
message's failure is that caller's error alone and the others are stored:
all-or-nothing stays per message. At most two round trips are in flight per queue
(``MAX_IN_FLIGHT``), on two connections, and a write carries at most ``MAX_BATCH``
calls: so Redis can run the scripts of one write while this process parses the replies
of the other and its callers
publish again, instead of the two taking turns; more in flight would only queue in
Redis, which runs scripts one after another. (On the shared 2-core bench machine the gain
is within its noise: bench/bench_concurrency.py.) The callers a batch wakes usually
publish again at once, so a sender yields one loop step before it stops, to take them
along instead of leaving the next call to go out alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

Item = TypeVar("Item")

# Calls per write; more wait for the next one. Small enough that the two writes in
# flight take turns in Redis, large enough to spread a write's cost over many calls.
MAX_BATCH = 64
MAX_IN_FLIGHT = 2


class Coalescer(Generic[Item]):
    """Send ``item``s with ``send_one`` or, while one is in flight, with ``send_many``.

    ``send_one(item)`` returns the reply or raises; ``send_many(items)`` returns one
    entry per item, the reply or the exception that item's caller raises (a round trip
    that failed as a whole: a fresh exception per item, so no two callers share one
    object and its traceback). ``sent_alone`` and ``batches`` count the two paths.
    """

    def __init__(
        self,
        send_one: Callable[[Item], Awaitable[object]],
        send_many: Callable[[Sequence[Item]], Awaitable[list[object]]],
        *,
        name: str,
        max_batch: int = MAX_BATCH,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._send_one = send_one
        self._send_many = send_many
        self._name = name
        self._max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._in_flight = 0  # round trips on the wire (each holds a connection)
        self._queued: list[tuple[Item, asyncio.Future[object]]] = []
        self._senders: set[asyncio.Task[None]] = set()
        self.sent_alone = 0
        self.batches = 0

    async def call(self, item: Item) -> object:
        if self.take_slot():
            try:
                return await self._send_one(item)
            finally:
                self.slot_done()
        return await self.queue(item)

    # The latency path inlines call(): a caller that takes a slot sends the item itself
    # (no frame of ours in between) and calls slot_done() after, whatever happened.
    def take_slot(self) -> bool:
        """True: a round trip may start now, and the caller makes it."""
        if self._in_flight < self.max_in_flight:
            self._in_flight += 1
            self.sent_alone += 1
            return True
        return False

    def queue(self, item: Item) -> asyncio.Future[object]:
        """The future of ``item``'s reply, sent in a coming batch."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queued.append((item, future))
        return future

    def slot_done(self) -> None:
        """The round trip of a ``take_slot()`` ended: its slot sends what queued meanwhile."""
        # Calls queue only while every slot is taken, so each slot checks as it frees.
        if self._queued:
            sender = asyncio.create_task(self._send_queued(), name=self._name)
            self._senders.add(sender)
        else:
            self._in_flight -= 1

    async def _send_queued(self) -> None:
        """Hold one slot and send what is queued until nothing is."""
        try:
            while True:
                taken = self._queued[: self._max_batch]
                del self._queued[: self._max_batch]
                # A caller cancelled while waiting wants nothing sent.
                batch = [(item, future) for item, future in taken if not future.cancelled()]
                if batch:
                    await self._send_batch(batch)
                if not self._queued:
                    await asyncio.sleep(0)  # the callers just answered often publish again
                    if not self._queued:
                        return
        finally:
            self._in_flight -= 1
            task = asyncio.current_task()
            if task is not None:
                self._senders.discard(task)
            if self._in_flight == 0:  # this sender was cancelled: nobody will send these
                for _, future in self._queued:
                    future.cancel()
                self._queued.clear()

    async def _send_batch(self, batch: list[tuple[Item, asyncio.Future[object]]]) -> None:
        self.batches += 1
        try:
            replies = await self._send_many([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # a bug in send_many: it reports failures per item
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def aclose(self) -> None:
        """Wait for the batches on the wire (they end within the client's bounds)."""
        while self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)
