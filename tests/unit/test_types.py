"""Value types: Priority parsing and the validators of Message, PubSubMessage, LocalEvent.

A bad value is refused where it enters, with the field's name and the value."""

from __future__ import annotations

import uuid
from typing import Any

import attrs
import pytest

from meetq import LocalEvent, Message, Priority, PubSubMessage, ValidationError
from meetq.core._validation import MAX_TYPE_LENGTH
from meetq.core.types import new_id

# -- Priority --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, Priority.LOW),
        (1, Priority.NORMAL),
        (2, Priority.HIGH),
        (3, Priority.CRITICAL),
        ("low", Priority.LOW),
        ("Normal", Priority.NORMAL),
        (" HIGH ", Priority.HIGH),
        ("critical", Priority.CRITICAL),
        (Priority.HIGH, Priority.HIGH),
    ],
)
def test_priority_parse_accepts_ints_names_and_members(value: Any, expected: Priority) -> None:
    assert Priority.parse(value) is expected


@pytest.mark.parametrize("value", [4, -1, True, 1.0, "urgent", "", None, [1]])
def test_priority_parse_rejects_everything_else(value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        Priority.parse(value)
    assert info.value.field == "priority"
    assert info.value.value == value
    assert "CRITICAL(3)" in str(info.value)


def test_priority_parse_names_the_callers_field() -> None:
    with pytest.raises(ValidationError) as info:
        Priority.parse("urgent", field="messages[3].priority")
    assert info.value.field == "messages[3].priority"


def test_priority_order_higher_value_first() -> None:
    assert sorted(Priority, reverse=True) == [
        Priority.CRITICAL, Priority.HIGH, Priority.NORMAL, Priority.LOW,
    ]


# -- Message ---------------------------------------------------------------------------


def test_message_defaults() -> None:
    message = Message(type="job")
    assert message.payload == {}
    assert message.priority is Priority.NORMAL
    assert len(message.id) == 32
    assert message.timestamp > 0
    assert (message.retry_count, message.attempt) == (0, 1)
    assert message.max_retries is None
    assert message.timeout is None
    assert message.headers == {}
    assert Message(type="job").id != message.id


def test_message_converts_priority_and_timeout() -> None:
    message = Message(type="job", priority="critical", timeout="2m")
    assert message.priority is Priority.CRITICAL
    assert message.timeout == 120.0
    assert Message(type="job", timeout=1.5).timeout == 1.5


def test_message_copies_the_callers_mappings() -> None:
    payload: dict[str, Any] = {"n": 1}
    headers = {"h": "v"}
    message = Message(type="job", payload=payload, headers=headers)
    payload["n"] = 2
    headers["h"] = "changed"
    assert message.payload == {"n": 1}
    assert message.headers == {"h": "v"}


def test_message_is_frozen() -> None:
    message = Message(type="job")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        message.type = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"type": ""}, "type"),
        ({"type": 5}, "type"),
        ({"type": "x" * (MAX_TYPE_LENGTH + 1)}, "type"),
        ({"type": "t", "id": ""}, "id"),
        ({"type": "t", "payload": [1, 2]}, "payload"),
        ({"type": "t", "payload": {2: "x"}}, "payload[2]"),
        ({"type": "t", "headers": {"a": 1}}, "headers['a']"),
        ({"type": "t", "headers": {1: "a"}}, "headers[1]"),
        ({"type": "t", "headers": "a=1"}, "headers"),
        ({"type": "t", "retry_count": -1}, "retry_count"),
        ({"type": "t", "retry_count": True}, "retry_count"),
        ({"type": "t", "max_retries": -1}, "max_retries"),
        ({"type": "t", "max_retries": 1001}, "max_retries"),
        ({"type": "t", "timeout": "abc"}, "timeout"),
        ({"type": "t", "timeout": 0}, "timeout"),
        ({"type": "t", "timeout": -3}, "timeout"),
        ({"type": "t", "timestamp": -1.0}, "timestamp"),
        ({"type": "t", "timestamp": "now"}, "timestamp"),
        ({"type": "t", "source": 3}, "source"),
        ({"type": "t", "destination": b"x"}, "destination"),
        ({"type": "t", "dedup_key": 9}, "dedup_key"),
        ({"type": "t", "priority": "urgent"}, "priority"),
    ],
)
def test_message_rejects_bad_fields_naming_them(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Message(**kwargs)
    assert info.value.field == field
    assert f"{field}=" in str(info.value)


def test_timeout_error_says_which_durations_work() -> None:
    with pytest.raises(ValidationError, match=r"timeout='abc': expected a duration"):
        Message(type="t", timeout="abc")


def test_evolve_revalidates() -> None:
    message = Message(type="t")
    with pytest.raises(ValidationError) as info:
        attrs.evolve(message, retry_count=-2)
    assert info.value.field == "retry_count"


# -- PubSubMessage and LocalEvent ------------------------------------------------------


@pytest.mark.parametrize("cls", [PubSubMessage, LocalEvent])
def test_event_types_validate_like_message(cls: type[Any]) -> None:
    event = cls(type="user.joined", payload={"id": 1}, source="svc")
    assert event.payload == {"id": 1}
    assert len(event.id) == 32
    with pytest.raises(ValidationError) as info:
        cls(type="")
    assert info.value.field == "type"
    with pytest.raises(ValidationError) as info:
        cls(type="x", payload=[1])
    assert info.value.field == "payload"
    with pytest.raises(ValidationError) as info:
        cls(type="x", source=1)
    assert info.value.field == "source"


def test_pubsub_message_headers_and_channel_are_checked() -> None:
    with pytest.raises(ValidationError) as info:
        PubSubMessage(type="x", headers={"k": 1})
    assert info.value.field == "headers['k']"
    with pytest.raises(ValidationError) as info:
        PubSubMessage(type="x", channel=5)
    assert info.value.field == "channel"


def test_new_id_is_unique_hex() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_new_id_is_a_version_4_uuid_in_hex() -> None:
    # As uuid.uuid4().hex made it, so ids parse as UUIDs wherever users keep them.
    for _ in range(200):
        parsed = uuid.UUID(hex=new_id())
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    bits = [int(new_id(), 16) for _ in range(256)]
    # Every one of the 122 random bits is seen both set and clear.
    random_mask = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
    seen_set = seen_clear = 0
    for number in bits:
        seen_set |= number
        seen_clear |= ~number
    assert seen_set & random_mask == random_mask
    assert seen_clear & random_mask == random_mask
