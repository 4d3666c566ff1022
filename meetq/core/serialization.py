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
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol, runtime_checkable

from meetq.core._durations import MAX_DURATION
from meetq.core._fastattrs import trusted_builder
from meetq.core._validation import MAX_PAYLOAD_DEPTH, MAX_TYPE_LENGTH, not_utf8
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


# Levels a serialized document may open: the payload's own limit plus the message
# envelope around it. The rule itself is MAX_PAYLOAD_DEPTH, in one place.
_ROOM = MAX_PAYLOAD_DEPTH + 1
_TOO_DEEP = f"nested deeper than {MAX_PAYLOAD_DEPTH} levels of dicts and lists"


def _find_unencodable(
    value: Any, path: str, *, check_text: bool = False, room: int = _ROOM
) -> tuple[str, Any, str] | None:
    """Return (path, value, problem) of the first value JSON cannot carry faithfully.

    ``check_text`` also looks for strings UTF-8 cannot encode (lone surrogates); that
    costs a pass over every string, so it is only done once encoding has failed.
    ``room`` is how many more levels of dicts and lists may open below ``value``.
    """
    kind = type(value)
    if kind in _SCALARS_SUBCLASSED and kind not in _EXACT_SCALARS:
        # An IntEnum, a str subclass, a numpy scalar: it would arrive as a plain
        # int/str/float, so the handler would not get what was published.
        return (path, value, f"{kind.__name__} would arrive as a plain {_base_name(value)}")
    if isinstance(value, str):
        if check_text and not_utf8(value):
            return (path, value, "the string is not valid Unicode (lone surrogate)")
        return None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            int.__repr__(value)
        except ValueError:  # past sys.get_int_max_str_digits(): no JSON reader takes it
            digits = int(value.bit_length() * 0.30103) + 1
            return (path, value, f"an int of about {digits} digits is too long for JSON")
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value, "NaN and infinity are not JSON")
    if isinstance(value, Mapping | list) and room <= 0:
        return (path, value, _TOO_DEEP)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return (f"{path}[{key!r}]", key, f"keys must be strings, not {type(key).__name__}")
            if check_text and not_utf8(key):
                return (f"{path}[{key!r}]", key, "the key is not valid Unicode (lone surrogate)")
            found = _find_unencodable(
                item, f"{path}.{key}", check_text=check_text, room=room - 1
            )
            if found is not None:
                return found
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_unencodable(
                item, f"{path}[{index}]", check_text=check_text, room=room - 1
            )
            if found is not None:
                return found
        return None
    return (path, value, f"{type(value).__name__} is not JSON-serializable")


_EXACT_SCALARS = (str, int, bool, float)


class _ScalarSubclasses:
    """``type(x) in _SCALARS_SUBCLASSED``: true for subclasses of the JSON scalars."""

    def __contains__(self, kind: object) -> bool:
        return isinstance(kind, type) and issubclass(kind, _EXACT_SCALARS)


_SCALARS_SUBCLASSED = _ScalarSubclasses()


def _base_name(value: Any) -> str:
    for base in (bool, int, float, str):
        if isinstance(value, base):
            return base.__name__
    return "value"


def _plain(value: Any, room: int = _ROOM) -> bool:
    """True when ``value`` is built from exactly dict/list/str/int/bool/None and finite
    floats, nested at most ``room`` levels, so JSON carries it unchanged. Hot path:
    scalars are checked inline."""
    kind = type(value)
    if kind is dict:
        if room <= 0:
            return False
        for key, item in value.items():
            if type(key) is not str:
                return False
            k = type(item)
            if k is str or k is int or k is bool or item is None:
                continue
            if not _plain(item, room - 1):
                return False
        return True
    if kind is list:
        if room <= 0:
            return False
        for item in value:
            k = type(item)
            if k is str or k is int or k is bool or item is None:
                continue
            if not _plain(item, room - 1):
                return False
        return True
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return bool(value - value == 0.0)  # False for NaN and infinities
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
                # A lone surrogate, an int too long to print: named below.
                with contextlib.suppress(ValueError):
                    return _ENCODER.encode(value).encode()
            found = _find_unencodable(value, field, check_text=True)
            if found is None:
                # Only containers differ from the plain kind (a dict subclass, say); the
                # scalars are exact, so what survives a round trip arrives unchanged.
                with contextlib.suppress(TypeError, ValueError):
                    data = _ENCODER.encode(value).encode()
                    if json.loads(data) == value:
                        return data
        except RecursionError:
            raise SerializationError(field, value, "nested too deeply to encode") from None
        path, bad, problem = found if found is not None else (field, value, "not valid JSON")
        raise SerializationError(path, bad, problem)

    def loads(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except RecursionError:
            # Bytes stored or sent by someone else, nested past what the decoder's
            # recursion allows: damaged input like any other, so a ValueError.
            raise ValueError("nested too deeply to decode") from None


def _load(data: bytes, serializer: Serializer) -> Any:
    try:
        return serializer.loads(data)
    except RecursionError:  # a user's serializer on a deep document: damaged input
        raise ValueError("nested too deeply to decode") from None


def encode_message(
    message: Message, serializer: Serializer, *, max_retries: int | None = None
) -> bytes:
    """The stored form of a message; ``retry_count`` is kept by the backend, not here.

    ``max_retries`` fills in the message's when that is None.
    """
    if type(serializer) is JsonSerializer:
        data = _encode_plain_message(message, max_retries)
        if data is not None:
            return data
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
    if type(serializer) is JsonSerializer and type(data) is bytes:
        message = _decode_plain_message(data, retry_count)
        if message is not None:
            return message
    body = _load(data, serializer)
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


def encode_pubsub_message(
    message: PubSubMessage, serializer: Serializer, *, source: str | None = None
) -> bytes:
    """The wire form of a broadcast event; ``source`` fills in the message's when that
    is None (without building a new ``PubSubMessage``)."""
    if message.source is not None:
        source = message.source
    if type(serializer) is JsonSerializer:
        data = _encode_plain_pubsub(message, source)
        if data is not None:
            return data
    body = {
        "id": message.id,
        "type": message.type,
        "payload": message.payload,
        "timestamp": message.timestamp,
        "source": source,
        "headers": message.headers,
    }
    return serializer.dumps(body, field="message")


# Publishing and receiving run for every broadcast event, so both JSON steps take the
# shortest safe path with the built-in serializer: json.loads on bytes first guesses the
# encoding and strips whitespace, which our own UTF-8, compact output never needs.
_DECODER = json.JSONDecoder()
# Values the fast decoders have checked build the frozen value directly (_fastattrs).
_build_message = trusted_builder(
    Message, "type", "payload", "priority", "id", "timestamp", "retry_count", "max_retries",
    "timeout", "source", "destination", "headers", "dedup_key",
)  # fmt: skip
_build_pubsub_message = trusted_builder(
    PubSubMessage, "type", "payload", "id", "timestamp", "source", "channel", "headers"
)


def _encode_plain_pubsub(message: PubSubMessage, source: str | None) -> bytes | None:
    """The exact bytes ``JsonSerializer.dumps`` makes of the envelope, or None when a
    field is anything but plain JSON (the caller then takes the general path, which
    names the problem). The envelope's own fields are already validated by
    ``PubSubMessage``; only the payload tree needs walking."""
    timestamp = message.timestamp
    kind = type(timestamp)
    if kind is float:
        if timestamp - timestamp != 0.0:
            return None
        stamp = _float_repr(timestamp)
    elif kind is int:
        stamp = _int_repr(timestamp)
    else:
        return None
    event_id, event_type, headers = message.id, message.type, message.headers
    if (
        type(event_id) is not str
        or type(event_type) is not str
        or not (source is None or type(source) is str)
        or type(headers) is not dict
    ):
        return None
    try:
        if not _plain(message.payload, MAX_PAYLOAD_DEPTH):
            return None
        if headers:
            if not _plain(headers):
                return None
            header_text = _encode_tree(headers)
        else:
            header_text = "{}"
        text = (
            f'{{"id":{_quote(event_id)},"type":{_quote(event_type)},'
            f'"payload":{_encode_tree(message.payload)},"timestamp":{stamp},'
            f'"source":{"null" if source is None else _quote(source)},'
            f'"headers":{header_text}}}'
        )
        return text.encode()
    except (TypeError, ValueError, RecursionError):  # a lone surrogate, a cycle
        return None


def _encode_tree(value: Any) -> str:
    return "".join(_ENCODE_TREE(value, 0))


_quote = json.encoder.encode_basestring  # what _ENCODER uses for str (ensure_ascii=False)
_float_repr = float.__repr__  # what the C encoder uses for float
_int_repr = int.__repr__
# The C encoder _ENCODER builds on each call, built once. The tree was checked to be
# plain first, so the circular-reference bookkeeping (markers) is not needed.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)  # None without the C speedups
_ENCODE_TREE: Callable[[Any, int], Iterable[str]] = (
    _c_make_encoder(None, _refuse, _quote, None, ":", ",", False, False, False)
    if _c_make_encoder is not None
    else lambda value, _level: (_ENCODER.encode(value),)
)


def _json_number(value: object) -> str | None:
    """The C encoder's text for an exact int or a finite float, else None."""
    kind = type(value)
    if kind is float:
        return _float_repr(value) if value - value == 0.0 else None  # type: ignore[operator]
    if kind is int:
        return _int_repr(value)
    return None


def _json_text_or_null(value: object) -> str | None:
    """``null`` or the quoted text of an exact str; None for anything else."""
    if value is None:
        return "null"
    return _quote(value) if type(value) is str else None


def _encode_plain_message(message: Message, max_retries: int | None) -> bytes | None:
    """The exact bytes ``JsonSerializer.dumps`` makes of ``encode_message``'s body, or
    None when a field is anything but plain JSON (the caller then takes the general
    path, which names the problem). Every field is type-checked here again because a
    caller may have changed the payload or headers since ``Message`` validated them."""
    if message.max_retries is not None:
        max_retries = message.max_retries
    priority = message.priority
    stamp = _json_number(message.timestamp)
    timeout = "null" if message.timeout is None else _json_number(message.timeout)
    if (
        stamp is None
        or timeout is None
        or type(priority) is not Priority
        or not (max_retries is None or type(max_retries) is int)
    ):
        return None
    message_id = _json_text_or_null(message.id)
    message_type = _json_text_or_null(message.type)
    source = _json_text_or_null(message.source)
    destination = _json_text_or_null(message.destination)
    dedup_key = _json_text_or_null(message.dedup_key)
    payload, headers = message.payload, message.headers
    if (
        message_id is None
        or message_type is None
        or source is None
        or destination is None
        or dedup_key is None
        or type(headers) is not dict
    ):
        return None
    try:
        if not _plain(payload, MAX_PAYLOAD_DEPTH):
            return None
        if headers:
            if not _plain(headers):
                return None
            header_text = _encode_tree(headers)
        else:
            header_text = "{}"
        text = (
            f'{{"id":{message_id},"type":{message_type},"priority":{_int_repr(priority)},'
            f'"payload":{_encode_tree(payload)},"timestamp":{stamp},'
            f'"max_retries":{"null" if max_retries is None else _int_repr(max_retries)},'
            f'"timeout":{timeout},"source":{source},"destination":{destination},'
            f'"headers":{header_text},"dedup_key":{dedup_key}}}'
        )
        return text.encode()
    except (TypeError, ValueError, RecursionError):  # a lone surrogate
        return None


_PRIORITY_OF: Final = {int(p): p for p in Priority}


def _plain_name(value: object) -> bool:
    """What ``check_name`` accepts, for a value fresh from the JSON decoder."""
    return (
        type(value) is str
        and 0 < len(value) <= MAX_TYPE_LENGTH
        and (value.isascii() or not not_utf8(value))
    )


def _plain_optional_text(value: object) -> bool:
    """What ``optional_str_validator`` accepts."""
    return value is None or (type(value) is str and (value.isascii() or not not_utf8(value)))


def _decode_plain_message(data: bytes, retry_count: int) -> Message | None:
    """The message in ``data`` if it is compact UTF-8 JSON whose fields plainly pass
    ``Message``'s converters and validators, built without running them (they cost
    more than the JSON decode). None for anything else: the caller then takes the
    general path, which raises or converts exactly as ``Message(...)`` does."""
    try:
        text = data.decode()
        body, end = _DECODER.raw_decode(text)
    except (ValueError, RecursionError):  # also UnicodeDecodeError; the general path
        return None  # names the problem
    if end != len(text) or type(body) is not dict:
        return None
    get = body.get
    payload = get("payload")
    raw_priority = get("priority")
    priority = _PRIORITY_OF.get(raw_priority) if type(raw_priority) is int else None
    timestamp = get("timestamp")
    max_retries = get("max_retries")
    timeout = get("timeout")
    headers = get("headers") or {}
    # JSON objects always have str keys, so a dict payload is valid as it is; headers
    # need str values too. Comparisons are written so that NaN fails them; a timeout
    # given as an int or past the limits goes the general way (its converter).
    if not (
        _plain_name(get("id"))
        and _plain_name(get("type"))
        and type(payload) is dict
        and priority is not None
        and type(timestamp) is float
        and 0.0 <= timestamp < math.inf
        and type(retry_count) is int
        and retry_count >= 0
        and (max_retries is None or (type(max_retries) is int and 0 <= max_retries <= 1000))
        and (timeout is None or (type(timeout) is float and 0.0 < timeout <= MAX_DURATION))
        and _plain_optional_text(get("source"))
        and _plain_optional_text(get("destination"))
        and _plain_optional_text(get("dedup_key"))
        and type(headers) is dict
        and all(type(value) is str for value in headers.values())
    ):
        return None
    return _build_message(
        body["type"],
        payload,  # fresh from the decoder: nobody else holds it
        priority,
        body["id"],
        timestamp,
        retry_count,
        max_retries,
        timeout,
        get("source"),
        get("destination"),
        headers,
        get("dedup_key"),
    )


def decode_pubsub_message(data: bytes, serializer: Serializer, *, channel: str) -> PubSubMessage:
    """Rebuild a broadcast event received on ``channel``.

    Raises ``ValueError`` (or ``KeyError``, ``ValidationError``) for bytes that are not
    a well-formed event; the same checks apply whichever path decodes it.
    """
    if type(serializer) is JsonSerializer and type(data) is bytes:
        message = _decode_plain_pubsub(data, channel)
        if message is not None:
            return message
    body = _load(data, serializer)
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


def _decode_plain_pubsub(data: bytes, channel: str) -> PubSubMessage | None:
    """The event in ``data`` if it is compact UTF-8 JSON whose fields plainly pass
    ``PubSubMessage``'s validators, built without running them (they would cost more
    than the JSON decode). None for anything else: the caller then takes the general
    path, which raises or validates exactly as ``PubSubMessage(...)`` does."""
    try:
        text = data.decode()
        body, end = _DECODER.raw_decode(text)
    except (ValueError, RecursionError):  # also UnicodeDecodeError; the general path
        return None  # names the problem
    if end != len(text) or type(body) is not dict or type(channel) is not str:
        return None
    event_id = body.get("id")
    event_type = body.get("type")
    payload = body.get("payload")
    timestamp = body.get("timestamp")
    source = body.get("source")
    headers = body.get("headers") or {}
    # JSON objects always have str keys, so a dict payload is valid as it is; headers
    # need str values too. Comparisons are written so that NaN fails them.
    if not (
        _plain_name(event_id)
        and _plain_name(event_type)
        and type(payload) is dict
        and (type(timestamp) is float or type(timestamp) is int)
        and timestamp >= 0
        and _plain_optional_text(source)
        and type(headers) is dict
        and all(type(value) is str for value in headers.values())
    ):
        return None
    # payload is fresh from the decoder: nobody else holds it
    return _build_pubsub_message(event_type, payload, event_id, timestamp, source, channel, headers)
