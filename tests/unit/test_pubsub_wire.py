"""The PubSub envelope on the wire: the fast encode and decode paths give exactly what
the general ones give, and whatever they do not take still fails the general way."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from json_strategies import payloads

from meetq import JsonSerializer, PubSubMessage, SerializationError
from meetq.core.errors import ValidationError
from meetq.core.serialization import decode_pubsub_message, encode_pubsub_message

SERIALIZER = JsonSerializer()

names = st.text(min_size=1, max_size=20)


def general_encoding(message: PubSubMessage, source: str | None = None) -> bytes:
    """What ``JsonSerializer.dumps`` makes of the envelope (the path before the fast one)."""
    body = {
        "id": message.id,
        "type": message.type,
        "payload": message.payload,
        "timestamp": message.timestamp,
        "source": message.source if message.source is not None else source,
        "headers": message.headers,
    }
    return SERIALIZER.dumps(body, field="message")


def general_decoding(data: bytes, channel: str) -> PubSubMessage:
    body = SERIALIZER.loads(data)
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


class CountingSerializer(JsonSerializer):
    """A user's serializer: the fast paths must leave it in charge."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def dumps(self, value: Any, *, field: str = "payload") -> bytes:
        self.calls.append("dumps")
        return super().dumps(value, field=field)

    def loads(self, data: bytes) -> Any:
        self.calls.append("loads")
        return super().loads(data)


@given(
    payload=payloads,
    event_type=names,
    source=st.none() | names,
    headers=st.dictionaries(st.text(), st.text(), max_size=3),
    timestamp=st.floats(min_value=0, allow_infinity=False) | st.integers(min_value=0),
)
def test_fast_encoding_is_byte_identical_and_round_trips(
    payload: dict[str, Any],
    event_type: str,
    source: str | None,
    headers: dict[str, str],
    timestamp: float,
) -> None:
    sent = PubSubMessage(
        type=event_type, payload=payload, source=source, headers=headers, timestamp=timestamp
    )
    data = encode_pubsub_message(sent, SERIALIZER, source="default:1")
    assert data == general_encoding(sent, "default:1")
    back = decode_pubsub_message(data, SERIALIZER, channel="c")
    assert back == general_decoding(data, "c")
    assert back.payload == sent.payload and back.headers == sent.headers
    assert back.source == (source if source is not None else "default:1")


def test_source_fills_in_only_when_the_message_has_none() -> None:
    mine = PubSubMessage(type="t", source="mine")
    assert json.loads(encode_pubsub_message(mine, SERIALIZER, source="x"))["source"] == "mine"
    empty = PubSubMessage(type="t")
    assert json.loads(encode_pubsub_message(empty, SERIALIZER, source="x"))["source"] == "x"
    assert json.loads(encode_pubsub_message(empty, SERIALIZER))["source"] is None


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
def test_what_the_fast_path_refuses_fails_naming_the_field(
    payload: dict[str, Any], path: str, culprit: str
) -> None:
    with pytest.raises(SerializationError) as info:
        encode_pubsub_message(PubSubMessage(type="t", payload=payload), SERIALIZER)
    assert info.value.field == path
    assert culprit in str(info.value)


def test_a_nan_timestamp_is_refused() -> None:
    # Refused where it enters (before: only when encoding), like every other field.
    with pytest.raises(ValidationError) as info:
        PubSubMessage(type="t", timestamp=math.nan)
    assert info.value.field == "timestamp"


def test_a_cycle_is_refused_not_a_crash() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError):
        encode_pubsub_message(PubSubMessage(type="t", payload={"loop": loop}), SERIALIZER)


def test_a_users_serializer_is_used_both_ways() -> None:
    serializer = CountingSerializer()
    data = encode_pubsub_message(PubSubMessage(type="t"), serializer)
    decode_pubsub_message(data, serializer, channel="c")
    assert serializer.calls == ["dumps", "loads"]


def envelope(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "abc", "type": "t", "payload": {}, "timestamp": 1.5, "source": None,
        "headers": {},
    }
    body.update(fields)
    return body


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"not json", ValueError),
        (b"\xff\xfe", ValueError),
        (b'{"id": "a"} trailing', ValueError),
        (b"[1, 2]", ValueError),
        (json.dumps({"type": "t", "payload": {}, "timestamp": 1}).encode(), KeyError),
        (json.dumps(envelope(type="")).encode(), ValidationError),
        (json.dumps(envelope(id=7)).encode(), ValidationError),
        (json.dumps(envelope(type="x" * 201)).encode(), ValidationError),
        (json.dumps(envelope(payload=[1])).encode(), ValidationError),
        (json.dumps(envelope(timestamp=-1)).encode(), ValidationError),
        (json.dumps(envelope(timestamp=True)).encode(), ValidationError),
        (json.dumps(envelope(timestamp="now")).encode(), ValidationError),
        (b'{"id":"a","type":"t","payload":{},"timestamp":NaN}', ValidationError),
        (b"[" * 100_000 + b"]" * 100_000, ValueError),
        (json.dumps(envelope(source=5)).encode(), ValidationError),
        # Lone surrogates arrive as \u escapes; the names are refused as at publish.
        (json.dumps(envelope(id="\ud800")).encode(), ValidationError),
        (json.dumps(envelope(type="\udfff")).encode(), ValidationError),
        (json.dumps(envelope(source="\udc80")).encode(), ValidationError),
        (json.dumps(envelope(headers={"h": 1})).encode(), ValidationError),
        (json.dumps(envelope(headers=["h"])).encode(), ValidationError),
    ],
)
def test_malformed_events_raise_as_before(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_pubsub_message(data, SERIALIZER, channel="c")
    with pytest.raises(error):
        general_decoding(data, "c")


@pytest.mark.parametrize(
    "data",
    [
        b'  {"id":"a","type":"t","payload":{},"timestamp":1}\n',  # whitespace around
        json.dumps(envelope(headers=None)).encode(),
        json.dumps(envelope(payload={"a": [1, {"b": None}]}, source="s")).encode(),
    ],
)
def test_unusual_but_valid_events_decode_as_before(data: bytes) -> None:
    back = decode_pubsub_message(data, SERIALIZER, channel="c")
    assert back == general_decoding(data, "c")
    assert back.channel == "c"
