"""The Redis schedule store: ``ScheduleStore`` on one HASH per queue and four scripts.

Features: the named schedules of queue ``q`` live in ``P sched`` (``P`` =
``meetq:{q}:``, the queue's hash tag, so a fire touches one Cluster slot), field name ->
``<next fire ms> <revision> <definition>``. ``fire`` is ``lua/schedule_fire.lua``: it
compares the stored revision and next fire time with the ones the caller read and, in
the same script, stores the message through ``store_batch`` (enqueue.lua's own code in
``_lib.lua``) and the new next fire time — so of any number of processes racing for a
fire step exactly one applies it, and a process dying mid-call leaves it applied or not,
never half. A change (``schedule_put.lua`` storing something new,
``schedule_remove.lua``) publishes ``s`` on the queue's notify channel; the work
queue's wake-up listener hands it to the ``watch`` callbacks instead of the message
listeners. Every call runs through the work queue's EVALSHA path (its bound, NOSCRIPT
reload and error translation).
Capability: ``schedules`` (declared by ``RedisBackend``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from meetq.backends.redis._scripts import SCRIPTS, QueueKeys, Script, batch_layout, text
from meetq.core.protocols import (
    DeliveryCallback,
    StoredMessage,
    StoredSchedule,
    WakeCallback,
)

__all__ = ["RedisSchedules"]


class _Queue(Protocol):
    """What it needs of its ``RedisWorkQueue`` (named so, not imported: no cycle)."""

    _keys: QueueKeys
    schedule_watchers: list[WakeCallback]

    async def _eval(self, script: Script, keys: Sequence[bytes], args: Sequence[Any]) -> Any: ...

    async def listen(
        self, callback: WakeCallback, deliver: DeliveryCallback | None = None
    ) -> Callable[[], None]: ...


def _ignore() -> None:
    """The message wake-ups ``watch`` does not need (it only starts the listener)."""


class RedisSchedules:
    """The schedules of one Redis work queue (see the module docstring)."""

    def __init__(self, queue: _Queue) -> None:
        self._queue = queue
        keys = queue._keys
        self._keys = keys
        self._sched = keys.key("sched")
        self._head = [self._sched, keys.channel]

    def _record(self, name: str, raw: Any) -> StoredSchedule:
        parts = raw if isinstance(raw, list) else bytes(raw).split(b" ", 2)
        try:
            next_ms, revision, definition = parts
            return StoredSchedule(
                name=name,
                definition=bytes(definition),
                revision=text(revision),
                next_fire_ms=int(next_ms),
            )
        except (ValueError, TypeError, UnicodeDecodeError):
            # Not one of ours (overwritten by hand): listed with an error, never fired.
            return StoredSchedule(name=name, definition=bytes(raw), revision="", next_fire_ms=0)

    async def put(self, schedule: StoredSchedule) -> StoredSchedule:
        reply = await self._queue._eval(
            SCRIPTS["schedule_put"],
            self._head,
            [schedule.name, schedule.next_fire_ms, schedule.revision, schedule.definition],
        )
        return self._record(schedule.name, reply)

    async def remove(self, name: str) -> bool:
        reply = await self._queue._eval(SCRIPTS["schedule_remove"], self._head, [name])
        return int(reply) > 0

    async def list(self) -> list[StoredSchedule]:
        reply = await self._queue._eval(SCRIPTS["schedule_list"], [self._sched], [])
        pairs = {text(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}
        return [self._record(name, pairs[name]) for name in sorted(pairs)]

    async def fire(
        self,
        name: str,
        *,
        revision: str,
        expected_ms: int,
        next_ms: int,
        message: StoredMessage | None,
    ) -> bool:
        args: list[Any] = [name, revision, expected_ms, next_ms]
        if message is None:
            keys = list(self._keys.fixed)
        else:
            names, layout = batch_layout([message])
            keys = self._keys.with_types(names)
            args += layout
        keys.append(self._sched)
        reply = await self._queue._eval(SCRIPTS["schedule_fire"], keys, args)
        return int(reply) == 1

    async def watch(self, callback: WakeCallback) -> Callable[[], None]:
        # The queue's wake-up listener carries schedule wake-ups too; listening starts
        # it (or joins it) and primes the subscription.
        stop_listening = await self._queue.listen(_ignore)
        watchers = self._queue.schedule_watchers
        watchers.append(callback)

        def stop() -> None:
            stop_listening()
            if callback in watchers:
                watchers.remove(callback)

        return stop
