"""Value types users create and receive: priorities, messages, events, dead letters."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from enum import IntEnum
from typing import Any

import attrs

from meetq.core._durations import parse_duration
from meetq.core.errors import ValidationError

__all__ = ["DeadLetter", "LocalEvent", "Message", "Priority", "PubSubMessage", "new_id"]

MAX_TYPE_LENGTH = 200


def new_id() -> str:
    """A fresh random message id (32 hex digits)."""
    return uuid.uuid4().hex


class Priority(IntEnum):
    """Delivery priority; a higher value is delivered first. The default is ``NORMAL``."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3

    @classmethod
    def parse(cls, value: object, *, field: str = "priority") -> Priority:
        """Accept a ``Priority``, its int value, or its name in any case."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        if isinstance(value, str):
            try:
                return cls[value.strip().upper()]
            except KeyError:
                pass
        raise ValidationError(
            field, value, "expected a Priority: CRITICAL(3), HIGH(2), NORMAL(1) or LOW(0)"
        )


def _check_name(field: str, value: object) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_TYPE_LENGTH:
        raise ValidationError(
            field, value, f"expected a non-empty string of at most {MAX_TYPE_LENGTH} characters"
        )


def _type_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _check_name(attribute.name, value)


def _optional_str(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise ValidationError(attribute.name, value, "expected a string or None")


def _payload_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Mapping):
        raise ValidationError(attribute.name, value, "expected a mapping with string keys")
    for key in value:
        if not isinstance(key, str):
            raise ValidationError(f"{attribute.name}[{key!r}]", key, "keys must be strings")


def _headers_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Mapping):
        raise ValidationError(attribute.name, value, "expected a mapping of str to str")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ValidationError(
                f"headers[{key!r}]", item, "header names and values must be strings"
            )


def _max_retries_validator(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1000:
        raise ValidationError(attribute.name, value, "expected an int from 0 to 1000, or None")


def _retry_count_validator(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValidationError(attribute.name, value, "expected a non-negative int")


def _timestamp_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValidationError(attribute.name, value, "expected a Unix time in seconds")


def _convert_timeout(value: object) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value, number_unit=1.0)
    except ValueError as exc:
        raise ValidationError("timeout", value, str(exc)) from None
    if seconds <= 0:
        raise ValidationError("timeout", value, "a handler timeout must be positive")
    return seconds


def _convert_priority(value: object) -> Priority:
    return Priority.parse(value)


def _convert_mapping(value: object) -> object:
    # Copy so later changes to the caller's dict cannot alter a published message.
    return dict(value) if isinstance(value, Mapping) else value


@attrs.frozen(kw_only=True)
class Message:
    """A unit of work for a ``MessageQueue``.

    ``timeout`` is the handler time limit in seconds (None: the queue's default).
    ``max_retries`` is how many times a failed attempt is retried (None: the queue's
    default), so a message runs at most ``max_retries + 1`` times. ``retry_count`` is
    filled in on delivery: 0 on the first attempt.
    """

    type: str = attrs.field(validator=_type_validator)
    payload: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_convert_mapping, validator=_payload_validator
    )
    priority: Priority = attrs.field(default=Priority.NORMAL, converter=_convert_priority)
    id: str = attrs.field(factory=new_id, validator=_type_validator)
    timestamp: float = attrs.field(factory=time.time, validator=_timestamp_validator)
    retry_count: int = attrs.field(default=0, validator=_retry_count_validator)
    max_retries: int | None = attrs.field(default=None, validator=_max_retries_validator)
    timeout: float | None = attrs.field(default=None, converter=_convert_timeout)
    source: str | None = attrs.field(default=None, validator=_optional_str)
    destination: str | None = attrs.field(default=None, validator=_optional_str)
    headers: Mapping[str, str] = attrs.field(
        factory=dict, converter=_convert_mapping, validator=_headers_validator
    )
    dedup_key: str | None = attrs.field(default=None, validator=_optional_str)

    @property
    def attempt(self) -> int:
        """Which attempt this delivery is: 1 for the first, 2 for the first retry, ..."""
        return self.retry_count + 1


@attrs.frozen(kw_only=True)
class DeadLetter:
    """A message that exhausted its attempts, kept beside the reason it failed.

    ``message`` is None when the stored bytes could not be decoded; ``raw`` then holds them.
    """

    id: str
    type: str
    message: Message | None
    raw: bytes | None
    error: str
    traceback: str
    attempts: int
    failed_at: float


@attrs.frozen(kw_only=True)
class PubSubMessage:
    """An event broadcast to every subscriber of a channel.

    ``id``, ``timestamp`` and ``source`` are filled in at publish when left empty;
    ``channel`` is set on delivery (without the namespace prefix).
    """

    type: str = attrs.field(validator=_type_validator)
    payload: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_convert_mapping, validator=_payload_validator
    )
    id: str = attrs.field(factory=new_id, validator=_type_validator)
    timestamp: float = attrs.field(factory=time.time, validator=_timestamp_validator)
    source: str | None = attrs.field(default=None, validator=_optional_str)
    channel: str | None = attrs.field(default=None, validator=_optional_str)
    headers: Mapping[str, str] = attrs.field(
        factory=dict, converter=_convert_mapping, validator=_headers_validator
    )


@attrs.frozen(kw_only=True)
class LocalEvent:
    """An in-process event delivered by the ``LocalEventBus``."""

    type: str = attrs.field(validator=_type_validator)
    payload: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_convert_mapping, validator=_payload_validator
    )
    source: str | None = attrs.field(default=None, validator=_optional_str)
    id: str = attrs.field(factory=new_id, validator=_type_validator)
    timestamp: float = attrs.field(factory=time.time, validator=_timestamp_validator)
