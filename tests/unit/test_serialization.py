"""JsonSerializer and the stored form of messages: what goes in comes out equal, and
anything JSON would change or cannot carry is refused with the path to it."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

import attrs
import pytest
from hypothesis import given
from json_strategies import payloads

from meetq import JsonSerializer, Message, Priority, PubSubMessage, SerializationError, Serializer
from meetq.core.errors import ValidationError
from meetq.core.serialization import (
    decode_message,
    decode_pubsub_message,
    encode_message,
    encode_pubsub_message,
)

SERIALIZER = JsonSerializer()



def test_json_serializer_satisfies_the_protocol() -> None:
    assert isinstance(SERIALIZER, Serializer)
    assert SERIALIZER.name == "json"


def test_message_round_trip_keeps_every_field() -> None:
    sent = Message(
        type="resize",
        payload={"url": "https://x/ä.png", "sizes": [64, 128.5], "opts": {"crop": None}},
        priority="high",
        source="web",
        destination="images",
        headers={"trace": "t-1"},
        max_retries=5,
        timeout="90s",
        dedup_key="img-1",
    )
    data = encode_message(sent, SERIALIZER)
    assert isinstance(data, bytes)
    # Compact UTF-8 JSON, not ASCII escapes.
    assert "ä".encode() in data
    assert b", " not in data
    back = decode_message(data, SERIALIZER, retry_count=2)
    assert back == attrs.evolve(sent, retry_count=2)
    assert back.attempt == 3
    assert back.priority is Priority.HIGH
    assert back.timeout == 90.0


def test_pubsub_message_round_trip() -> None:
    sent = PubSubMessage(type="user.joined", payload={"id": 7}, source="svc", headers={"h": "v"})
    back = decode_pubsub_message(
        encode_pubsub_message(sent, SERIALIZER), SERIALIZER, channel="users"
    )
    assert (back.id, back.type, back.payload, back.timestamp) == (
        sent.id, sent.type, sent.payload, sent.timestamp,
    )
    assert (back.source, back.headers, back.channel) == ("svc", {"h": "v"}, "users")


@given(payload=payloads)
def test_payload_round_trip_property(payload: dict[str, Any]) -> None:
    sent = Message(type="t", payload=payload)
    back = decode_message(encode_message(sent, SERIALIZER), SERIALIZER, retry_count=0)
    assert back == sent
    assert json.loads(SERIALIZER.dumps(payload)) == payload


@pytest.mark.parametrize(
    ("payload", "path", "culprit"),
    [
        ({"blob": b"\x00"}, "message.payload.blob", "bytes"),
        ({"tags": {"a", "b"}}, "message.payload.tags", "set"),
        ({"pair": (1, 2)}, "message.payload.pair", "tuple"),
        ({"when": datetime.datetime(2024, 1, 1)}, "message.payload.when", "datetime"),
        ({"x": math.nan}, "message.payload.x", "NaN"),
        ({"x": math.inf}, "message.payload.x", "NaN and infinity"),
        ({"a": [0, 1, {"b": b"x"}]}, "message.payload.a[2].b", "bytes"),
        ({"a": {"b": [[1.5, -math.inf]]}}, "message.payload.a.b[0][1]", "infinity"),
        ({"a": {1: "one"}}, "message.payload.a[1]", "keys must be strings"),
        ({"a": ["ok", "\ud800"]}, "message.payload.a[1]", "surrogate"),
        ({"a": {"\udc00": 1}}, "message.payload.a['\\udc00']", "surrogate"),
    ],
)
def test_values_json_would_change_are_rejected_with_their_path(
    payload: dict[str, Any], path: str, culprit: str
) -> None:
    message = Message(type="t", payload=payload)
    with pytest.raises(SerializationError) as info:
        encode_message(message, SERIALIZER)
    assert info.value.field == path
    assert culprit in str(info.value)
    assert isinstance(info.value, ValidationError)


def test_top_level_payload_key_must_be_a_string() -> None:
    # Caught earlier, by Message itself.
    with pytest.raises(ValidationError) as info:
        Message(type="t", payload={1: "x"})
    assert info.value.field == "payload[1]"


def test_dumps_names_the_given_field() -> None:
    with pytest.raises(SerializationError) as info:
        SERIALIZER.dumps({"k": (1,)}, field="event")
    assert info.value.field == "event.k"
    assert info.value.value == (1,)


def test_plain_json_types_are_accepted() -> None:
    value = {"s": "x", "i": -(2**70), "f": 0.1, "b": False, "n": None, "l": [], "d": {}}
    assert json.loads(SERIALIZER.dumps(value)) == value


def test_loads_of_damaged_bytes_raises_value_error() -> None:
    with pytest.raises(ValueError):
        SERIALIZER.loads(b"{not json")
    with pytest.raises(ValueError, match="not an object"):
        decode_message(b"[1, 2]", SERIALIZER, retry_count=0)


def test_scalar_subclasses_are_refused_because_they_would_change_type() -> None:
    import enum

    class Color(enum.IntEnum):
        RED = 1

    class Label(str):
        pass

    for value, kind in ((Color.RED, "int"), (Label("x"), "str")):
        with pytest.raises(SerializationError) as info:
            JsonSerializer().dumps({"v": value})
        assert info.value.field == "payload.v"
        assert f"plain {kind}" in str(info.value)
