"""Tracking for the Redis work queue: ``TrackingWorkQueue`` as a mixin of ``RedisWorkQueue``.

Keys and channels it adds to the work queue's key map (``P`` = ``meetq:{q}:``):

- ``P t:<id>``: HASH of what a message leaves behind — ``error`` (a retry's last
  error), ``progress`` and ``record`` (core's finished record) — with a TTL
  (``status_ttl`` / ``result_ttl``); it is also the channel a finished record is
  announced on, so ``result()`` waits by push (one subscription per waiting call).
- ``P cancel``: the channel a cancel of a leased message is sent on (``<id>\\n<token>``);
  every worker's wake-up listener subscribes to it and the holder of the token stops
  its handler.

Nothing is written per claim: a lease token starts with the claimer's name and the
claim time (``LeaseLabel``), which ``status.lua`` reads back. The finished record of an
ack (results on) and a retry's last error go out in ``track.lua``, in the same write
as the exchange that settles them and just before it; a cancel in between wins.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from typing import Any, TypeVar

import redis.exceptions

from meetq.backends.redis._connection import translate_errors
from meetq.backends.redis._scripts import SCRIPTS, Call, QueueKeys, text
from meetq.backends.redis._sharded import ShardedSubscription
from meetq.core.errors import ClosedError
from meetq.core.protocols import LeaseRef, Settlement
from meetq.core.tracking import CancelCallback, FinalWait, MessageFacts

__all__ = ["RedisTracking", "track_call"]

log = logging.getLogger("meetq.redis.work_queue")

T = TypeVar("T")


def facts_key(keys: QueueKeys, message_id: str) -> bytes:
    return keys.key(f"t:{message_id}")


def track_call(keys: QueueKeys, settlements: Sequence[Settlement]) -> Call | None:
    """track.lua for the settlements that leave something behind, or None."""
    entry_keys: list[bytes] = [keys.fixed[3]]
    args: list[Any] = []
    for s in settlements:
        if s.keep_ms <= 0:
            continue
        if s.record:
            field, value = "record", s.record
        elif s.outcome == "retry" and s.error:
            field, value = "error", s.error.encode()
        else:
            continue
        entry_keys.append(facts_key(keys, s.lease.id))
        args += (s.lease.id, s.lease.token, field, value, s.keep_ms)
    if not args:
        return None
    return SCRIPTS["track"], entry_keys, args


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def by_type_steps(
    keys: QueueKeys, script: str, message_id: str, extra: Sequence[Any]
) -> Generator[Call, Any, Any]:
    """status.lua or cancel.lua with every known type's keys; once more, with the types
    the script named, when the id is stored under a type not passed."""
    names = keys.known_types
    reply: Any = None
    for _ in range(2):
        reply = yield (
            SCRIPTS[script],
            [*keys.with_types(names), facts_key(keys, message_id)],
            [message_id, len(names), *extra],
        )
        if script == "cancel":
            stale = reply[1] if isinstance(reply, list) else None
        else:
            stale = reply[9] if reply[0] == b"elsewhere" and len(reply) > 9 else None
        if not stale:
            break
        keys.known_types = names = sorted({*names, *(text(t) for t in stale)})
    return reply


def facts_from(keys: QueueKeys, reply: Sequence[Any]) -> MessageFacts:
    """status.lua's reply as ``MessageFacts``."""
    where, t, score, attempts, token, when, body, dinfo, flat = reply[:9]
    where = text(where)
    kept = {text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
    common: dict[str, Any] = {
        "error": text(kept.get("error", b"")),
        "progress": kept.get("progress", b""),
        "record": kept.get("record", b""),
    }
    if where == "dead":
        info: Any = {}
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            info = json.loads(dinfo) if dinfo else {}
        if not isinstance(info, dict):
            info = {}
        common["error"] = str(info.get("error", "")) or common["error"]
        return MessageFacts(
            where="dead",
            type=str(info.get("type", "")),
            priority=_int(info.get("priority"), 1),
            attempts=_int(info.get("attempts")),
            body=body or None,
            dead_at_ms=_int(info.get("failed_at")) or None,
            **common,
        )
    if where in ("gone", "elsewhere"):
        # "elsewhere" twice: its type is gone from the types set (a key removed by
        # hand); nothing live can be shown for it.
        return MessageFacts(where="gone", **common)
    names = keys.known_types
    priority = 3 - _int(score) // 2**44
    return MessageFacts(
        where=where,  # type: ignore[arg-type]  # ready, delayed or leased here
        type=names[t - 1] if 0 < t <= len(names) else "",
        priority=priority if 0 <= priority <= 3 else 1,
        attempts=_int(attempts),
        body=body,
        token=text(token),
        available_ms=_int(when) or None if where != "leased" else None,
        **common,
    )


def cancel_args(keys: QueueKeys, record: bytes, keep_ms: int) -> tuple[Any, ...]:
    return (record, max(1, keep_ms), keys.key("cancel"))


def cancelled(reply: Any) -> bool:
    return not isinstance(reply, list) and int(reply) == 1


class RedisTracking:
    """The tracking calls; ``RedisWorkQueue`` supplies the plumbing they use."""

    _keys: QueueKeys
    _client: Any
    _cancel_callbacks: list[CancelCallback]
    _sharded: bool  # a Redis Cluster: the scripts SPUBLISH (_sharded.py)

    async def _eval(self, script: Any, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        raise NotImplementedError

    async def _run(self, steps: Generator[Call, Any, T]) -> T:
        raise NotImplementedError

    def _check_open(self) -> None:
        raise NotImplementedError

    async def facts(self, message_id: str) -> MessageFacts:
        steps = by_type_steps(self._keys, "status", message_id, ())
        return facts_from(self._keys, await self._run(steps))

    async def cancel(self, message_id: str, record: bytes, keep_ms: int) -> bool:
        extra = cancel_args(self._keys, record, keep_ms)
        return cancelled(await self._run(by_type_steps(self._keys, "cancel", message_id, extra)))

    async def report_progress(self, lease: LeaseRef, data: bytes, keep_ms: int) -> bool:
        keys = [self._keys.fixed[3], facts_key(self._keys, lease.id)]
        reply = await self._eval(
            SCRIPTS["progress"], keys, [lease.id, lease.token, data, max(1, keep_ms)]
        )
        return int(reply) == 1

    @contextlib.asynccontextmanager
    async def final_wait(self, message_id: str) -> AsyncIterator[FinalWait]:
        self._check_open()
        channel = facts_key(self._keys, message_id)
        pubsub = ShardedSubscription(self._client) if self._sharded else self._client.pubsub()
        try:
            with translate("result"):
                await pubsub.subscribe(channel)
                # The confirmation first: after it, a record written is heard.
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None or _kind(message) == "subscribe":
                        break

            async def wait(timeout: float) -> bool:  # noqa: ASYNC109  (the wait's own bound)
                with translate("result"):
                    message = await pubsub.get_message(timeout=max(0.0, timeout))
                return message is not None and _kind(message) == "message"

            yield wait
        finally:
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await pubsub.aclose()

    async def on_cancel(self, callback: CancelCallback) -> Callable[[], None]:
        self._check_open()
        self._cancel_callbacks.append(callback)

        def stop() -> None:
            if callback in self._cancel_callbacks:
                self._cancel_callbacks.remove(callback)

        return stop

    def _cancel_heard(self, data: bytes) -> None:
        """A cancel from cancel.lua: to every callback (the holder of the token acts)."""
        message_id, sep, token = data.partition(b"\n")
        if not sep:
            log.warning("meetq: unreadable cancel notice ignored: %r", data[:80])
            return
        lease = LeaseRef(id=text(message_id), type="", token=text(token))
        for callback in list(self._cancel_callbacks):
            callback(lease)


def _kind(message: Any) -> str:
    kind = message["type"]
    return kind.decode() if isinstance(kind, bytes) else str(kind)


@contextlib.contextmanager
def translate(what: str) -> Any:
    with translate_errors(what):
        try:
            yield
        except RuntimeError as exc:  # redis-py: a pubsub used after close
            raise ClosedError(f"{what}: {exc}") from exc


class RedisSyncTracking:
    """The blocking tracking calls of the sync producer (``_sync.py``): the same scripts
    and replies, driven by the sync client."""

    _keys: QueueKeys

    def _drive(self, steps: Generator[Call, Any, Any]) -> Any:
        raise NotImplementedError

    def _sync_client(self) -> Any:
        raise NotImplementedError

    def facts(self, message_id: str) -> MessageFacts:
        steps = by_type_steps(self._keys, "status", message_id, ())
        return facts_from(self._keys, self._drive(steps))

    def cancel(self, message_id: str, record: bytes, keep_ms: int) -> bool:
        extra = cancel_args(self._keys, record, keep_ms)
        return cancelled(self._drive(by_type_steps(self._keys, "cancel", message_id, extra)))

    @contextlib.contextmanager
    def final_wait(self, message_id: str) -> Iterator[Callable[[float], bool]]:
        pubsub = self._sync_client().pubsub()
        try:
            with translate("result"):
                pubsub.subscribe(facts_key(self._keys, message_id))
                while True:  # the confirmation first: after it, a record written is heard
                    message = pubsub.get_message(timeout=5.0)
                    if message is None or _kind(message) == "subscribe":
                        break

            def wait(timeout: float) -> bool:
                with translate("result"):
                    message = pubsub.get_message(timeout=max(0.0, timeout))
                return message is not None and _kind(message) == "message"

            yield wait
        finally:
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                pubsub.close()
