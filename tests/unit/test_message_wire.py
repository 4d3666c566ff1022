"""The work-queue message on the wire: the fast encode and decode paths give exactly what
the general ones give, and whatever they do not take still fails the general way.

The general path is the same functions with a ``JsonSerializer`` subclass: the fast
paths serve only the built-in serializer itself, so a subclass takes the old road.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from json_strategies import payloads

from meetq import JsonSerializer, Message, Priority, SerializationError
from meetq.core.serialization import decode_message, encode_message

FAST = JsonSerializer()


class GeneralJson(JsonSerializer):
    """Same bytes, same rules, but not the built-in class: the general path."""


GENERAL = GeneralJson()

names = st.text(min_size=1, max_size=20)
optional_text = st.none() | st.text(max_size=10)


def outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What a call gave: its value, or its error's type and text."""
    try:
        return ("ok", call())
    except Exception as exc:  # every kind counts: the two paths must agree on it
        return ("error", type(exc), str(exc))


def field_types(message: Message) -> dict[str, type]:
    return {name: type(value) for name, value in attrs.asdict(message, recurse=False).items()}


@given(
    payload=payloads,
    message_type=names,
    priority=st.sampled_from(list(Priority)),
    timestamp=st.floats(min_value=0, allow_infinity=False) | st.integers(min_value=0),
    max_retries=st.none() | st.integers(0, 1000),
    default_retries=st.none() | st.integers(0, 1000),
    timeout=st.none() | st.floats(min_value=0.001, max_value=1e9) | st.integers(1, 10**6),
    source=optional_text,
    destination=optional_text,
    dedup_key=optional_text,
    headers=st.dictionaries(st.text(), st.text(), max_size=3),
    retry_count=st.integers(0, 50),
)
def test_fast_paths_are_identical_to_the_general_ones(
    payload: dict[str, Any],
    message_type: str,
    priority: Priority,
    timestamp: float,
    max_retries: int | None,
    default_retries: int | None,
    timeout: float | None,
    source: str | None,
    destination: str | None,
    dedup_key: str | None,
    headers: dict[str, str],
    retry_count: int,
) -> None:
    sent = Message(
        type=message_type,
        payload=payload,
        priority=priority,
        timestamp=timestamp,
        max_retries=max_retries,
        timeout=timeout,
        source=source,
        destination=destination,
        dedup_key=dedup_key,
        headers=headers,
    )
    fast = outcome(lambda: encode_message(sent, FAST, max_retries=default_retries))
    assert fast == outcome(lambda: encode_message(sent, GENERAL, max_retries=default_retries))
    if fast[0] != "ok":  # a lone surrogate somewhere: refused alike, checked above
        return
    data = fast[1]
    back = decode_message(data, FAST, retry_count=retry_count)
    general = decode_message(data, GENERAL, retry_count=retry_count)
    assert back == general
    assert field_types(back) == field_types(general)
    assert back.payload == sent.payload and back.headers == sent.headers
    assert back.retry_count == retry_count
    assert back.max_retries == (max_retries if max_retries is not None else default_retries)


@pytest.mark.parametrize(
    ("payload", "path", "culprit"),
    [
        ({"pair": (1, 2)}, "message.payload.pair", "tuple"),
        ({"a": {1: "one"}}, "message.payload.a[1]", "keys must be strings"),
        ({"x": [1.0, math.nan]}, "message.payload.x[1]", "NaN"),
        ({"x": "\ud800"}, "message.payload.x", "surrogate"),
        ({"blob": b"\x00"}, "message.payload.blob", "bytes"),
    ],
)
def test_a_payload_changed_after_validation_still_fails_naming_the_field(
    payload: dict[str, Any], path: str, culprit: str
) -> None:
    message = Message(type="t")
    message.payload.update(payload)  # type: ignore[attr-defined]  # Message copied the dict
    with pytest.raises(SerializationError) as info:
        encode_message(message, FAST)
    assert info.value.field == path
    assert culprit in str(info.value)
    assert outcome(lambda: encode_message(message, GENERAL)) == outcome(
        lambda: encode_message(message, FAST)
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout", math.nan),
        ("timeout", math.inf),
        ("timestamp", math.nan),
        ("priority", 1),
        ("id", ("not", "text")),
        ("headers", {"h": {"deep": [1]}}),
        ("source", "\udc80"),
    ],
)
def test_fields_forced_past_validation_encode_as_the_general_path_does(
    field: str, value: Any
) -> None:
    message = Message(type="t", headers={"a": "b"})
    object.__setattr__(message, field, value)  # what attrs.evolve-free code could do
    assert outcome(lambda: encode_message(message, FAST)) == outcome(
        lambda: encode_message(message, GENERAL)
    )


def stored(**fields: Any) -> bytes:
    body: dict[str, Any] = {
        "id": "abc", "type": "t", "priority": 1, "payload": {}, "timestamp": 1.5,
        "max_retries": None, "timeout": None, "source": None, "destination": None,
        "headers": {}, "dedup_key": None,
    }
    body.update(fields)
    return json.dumps(body, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"\xff\xfe",
        stored()[:-1] + b"} trailing",
        b"[1, 2]",
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps({"type": "t", "priority": 1, "payload": {}, "timestamp": 1}).encode(),
        stored(id=""),
        stored(id=7),
        stored(id="\ud800"),
        stored(type="x" * 201),
        stored(type="\udfff"),
        stored(type=None),
        stored(payload=[1]),
        stored(payload="{}"),
        stored(priority=7),
        stored(priority=True),
        stored(priority=1.0),
        stored(priority=[1]),
        stored(timestamp=-1.0),
        stored(timestamp=True),
        stored(timestamp="now"),
        stored(timestamp=1e400),
        b'{"id":"a","type":"t","priority":1,"payload":{},"timestamp":NaN}',
        stored(max_retries=1001),
        stored(max_retries=True),
        stored(max_retries=-1),
        stored(max_retries=2.0),
        stored(timeout=0),
        stored(timeout=-1.0),
        stored(timeout=1e300),
        stored(timeout=True),
        stored(timeout="soon"),
        stored(source=5),
        stored(destination="\ud800"),
        stored(dedup_key=["k"]),
        stored(headers={"h": 1}),
        stored(headers=["h"]),
    ],
)
def test_damaged_messages_fail_as_the_general_path_fails(data: bytes) -> None:
    fast = outcome(lambda: decode_message(data, FAST, retry_count=0))
    assert fast[0] == "error"
    assert fast == outcome(lambda: decode_message(data, GENERAL, retry_count=0))


@pytest.mark.parametrize(
    "data",
    [
        b'  {"id":"a","type":"t","priority":1,"payload":{},"timestamp":1}\n',  # spaces
        stored(headers=None),
        stored(headers=[]),
        stored(priority="high"),
        stored(priority=3),
        stored(timestamp=0),
        stored(timestamp=1700000000),
        stored(timeout=5),
        stored(timeout="250ms"),
        stored(max_retries=0),
        stored(extra="ignored"),
        stored(id="caf\u00e9", source="s\u00fc", headers={"h": "\u2603"}),
        stored(payload={"a": [1, {"b": None}]}, dedup_key="k"),
        json.dumps({"id": "a", "type": "t", "priority": 0, "payload": {}, "timestamp": 2.0})
        .encode(),
    ],
)
def test_unusual_but_valid_messages_decode_as_before(data: bytes) -> None:
    fast = outcome(lambda: decode_message(data, FAST, retry_count=2))
    assert fast[0] == "ok"
    general = outcome(lambda: decode_message(data, GENERAL, retry_count=2))
    assert fast == general
    assert field_types(fast[1]) == field_types(general[1])


@pytest.mark.parametrize("retry_count", [-1, True, 1.0])
def test_a_bad_retry_count_from_the_backend_fails_as_before(retry_count: Any) -> None:
    fast = outcome(lambda: decode_message(stored(), FAST, retry_count=retry_count))
    assert fast[0] == "error"
    assert fast == outcome(lambda: decode_message(stored(), GENERAL, retry_count=retry_count))
