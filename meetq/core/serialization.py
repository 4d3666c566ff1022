"""Turning messages into bytes and back.

JSON is the default and the only format meetq ships; pickle is never used unless a
user writes and selects such a serializer themselves. A value JSON would silently change
(a tuple becoming a list, an int key becoming a string, NaN) is rejected, so what a
handler receives equals what was published on every backend.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from meetq.core.errors import SerializationError
from meetq.core.types import Message, Priority, PubSubMessage

__all__ = [
    "JsonSerializer",
    "Serializer",
    "decode_message",
    "decode_pubsub_message",
    "encode_message",
    "encode_pubsub_message",
]


@runtime_checkable
class Serializer(Protocol):
    """Encodes a JSON-like tree of plain values to bytes and back.

    ``dumps`` raises ``SerializationError`` naming the offending field; ``loads`` raises
    ``ValueError`` (or a subclass) for bytes it cannot read.
    """

    name: str

    def dumps(self, value: Mapping[str, Any], *, field: str = "payload") -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


def _not_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _find_unencodable(
    value: Any, path: str, *, check_text: bool = False
) -> tuple[str, Any, str] | None:
    """Return (path, value, problem) of the first value JSON cannot carry faithfully.

    ``check_text`` also looks for strings UTF-8 cannot encode (lone surrogates); that
    costs a pass over every string, so it is only done once encoding has failed.
    """
    if isinstance(value, str):
        if check_text and _not_utf8(value):
            return (path, value, "the string is not valid Unicode (lone surrogate)")
        return None
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value, "NaN and infinity are not JSON")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return (f"{path}[{key!r}]", key, f"keys must be strings, not {type(key).__name__}")
            if check_text and _not_utf8(key):
                return (f"{path}[{key!r}]", key, "the key is not valid Unicode (lone surrogate)")
            found = _find_unencodable(item, f"{path}.{key}", check_text=check_text)
            if found is not None:
                return found
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_unencodable(item, f"{path}[{index}]", check_text=check_text)
            if found is not None:
                return found
        return None
    return (path, value, f"{type(value).__name__} is not JSON-serializable")


def _plain(value: Any) -> bool:
    """True when ``value`` is built from exactly dict/list/str/int/bool/None and finite
    floats, so JSON carries it unchanged."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return bool(value - value == 0.0)  # False for NaN and infinities
    if kind is dict:
        return all(type(key) is str and _plain(item) for key, item in value.items())
    if kind is list:
        return all(_plain(item) for item in value)
    return False


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_refuse
)


class JsonSerializer:
    """Compact UTF-8 JSON; accepts dict, list, str, int, finite float, bool and None."""

    name = "json"

    def dumps(self, value: Mapping[str, Any], *, field: str = "payload") -> bytes:
        try:
            # Fast path: exact builtin types only, checked in one cheap pass; the C
            # encoder then cannot change anything on the way.
            if _plain(value):
                with contextlib.suppress(ValueError):  # a lone surrogate: named below
                    return _ENCODER.encode(value).encode()
            else:
                # Subclasses of dict and the like: accept what survives a round trip.
                with contextlib.suppress(TypeError, ValueError):
                    data = _ENCODER.encode(value).encode()
                    if json.loads(data) == value:
                        return data
            found = _find_unencodable(value, field, check_text=True)
        except RecursionError:
            raise SerializationError(field, value, "nested too deeply to encode") from None
        path, bad, problem = found if found is not None else (field, value, "not valid JSON")
        raise SerializationError(path, bad, problem)

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


def encode_message(
    message: Message, serializer: Serializer, *, max_retries: int | None = None
) -> bytes:
    """The stored form of a message; ``retry_count`` is kept by the backend, not here.

    ``max_retries`` fills in the message's when that is None.
    """
    body = {
        "id": message.id,
        "type": message.type,
        "priority": int(message.priority),
        "payload": message.payload,
        "timestamp": message.timestamp,
        "max_retries": message.max_retries if message.max_retries is not None else max_retries,
        "timeout": message.timeout,
        "source": message.source,
        "destination": message.destination,
        "headers": message.headers,
        "dedup_key": message.dedup_key,
    }
    return serializer.dumps(body, field="message")


def decode_message(data: bytes, serializer: Serializer, *, retry_count: int) -> Message:
    """Rebuild a stored message; raises ``ValueError`` (or a meetq error) if it is damaged."""
    body = serializer.loads(data)
    if not isinstance(body, dict):
        raise ValueError("stored message is not an object")
    return Message(
        id=body["id"],
        type=body["type"],
        priority=Priority.parse(body["priority"]),
        payload=body["payload"],
        timestamp=body["timestamp"],
        retry_count=retry_count,
        max_retries=body.get("max_retries"),
        timeout=body.get("timeout"),
        source=body.get("source"),
        destination=body.get("destination"),
        headers=body.get("headers") or {},
        dedup_key=body.get("dedup_key"),
    )


def encode_pubsub_message(message: PubSubMessage, serializer: Serializer) -> bytes:
    """The wire form of a broadcast event."""
    body = {
        "id": message.id,
        "type": message.type,
        "payload": message.payload,
        "timestamp": message.timestamp,
        "source": message.source,
        "headers": message.headers,
    }
    return serializer.dumps(body, field="message")


def decode_pubsub_message(data: bytes, serializer: Serializer, *, channel: str) -> PubSubMessage:
    """Rebuild a broadcast event received on ``channel``."""
    body = serializer.loads(data)
    if not isinstance(body, dict):
        raise ValueError("received event is not an object")
    return PubSubMessage(
        id=body["id"],
        type=body["type"],
        payload=body["payload"],
        timestamp=body["timestamp"],
        source=body.get("source"),
        headers=body.get("headers") or {},
        channel=channel,
    )
