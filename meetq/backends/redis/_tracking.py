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
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import redis.exceptions

from meetq.backends.redis._connection import translate_errors
from meetq.backends.redis._scripts import SCRIPTS, Call, QueueKeys, text
from meetq.core.errors import ClosedError
from meetq.core.protocols import LeaseRef, Settlement
from meetq.core.tracking import CancelCallback, FinalWait, MessageFacts

__all__ = ["RedisTracking", "track_call"]

log = logging.getLogger("meetq.redis.work_queue")


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


class RedisTracking:
    """The tracking calls; ``RedisWorkQueue`` supplies the plumbing they use."""

    _keys: QueueKeys
    _client: Any
    _cancel_callbacks: list[CancelCallback]

    async def _eval(self, script: Any, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        raise NotImplementedError

    async def _command(self, what: str, *args: Any) -> Any:
        raise NotImplementedError

    def _check_open(self) -> None:
        raise NotImplementedError

    async def _all_types(self) -> list[str]:
        """Every type the queue has stored (the scripts need their keys)."""
        members = await self._command("status", "SMEMBERS", self._keys.key("types"))
        self._keys.known_types = sorted({*self._keys.known_types, *(text(t) for t in members)})
        return self._keys.known_types

    async def _by_type(self, script: str, message_id: str, extra: Sequence[Any]) -> Any:
        """Run ``script`` with every known type's keys; once more with a fresh list when
        it says the id is stored under a type not passed."""
        names = self._keys.known_types
        for attempt in range(2):
            keys = [*self._keys.with_types(names), facts_key(self._keys, message_id)]
            reply = await self._eval(SCRIPTS[script], keys, [message_id, len(names), *extra])
            stale = reply == -1 if script == "cancel" else reply[0] == b"elsewhere"
            if not stale or attempt == 1:
                return reply
            names = await self._all_types()
        return reply

    async def facts(self, message_id: str) -> MessageFacts:
        reply = await self._by_type("status", message_id, ())
        where, t, score, attempts, token, when, body, dinfo, flat = reply
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
            # "elsewhere" twice: its type's keys are gone from the types set (a key
            # removed by hand); nothing live can be shown for it.
            return MessageFacts(where="gone", **common)
        names = self._keys.known_types
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

    async def cancel(self, message_id: str, record: bytes, keep_ms: int) -> bool:
        reply = await self._by_type(
            "cancel", message_id, (record, max(1, keep_ms), self._keys.key("cancel"))
        )
        return int(reply) == 1

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
        pubsub = self._client.pubsub()
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
