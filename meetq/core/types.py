"""Value types users create and receive: priorities, messages, events, dead letters."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from enum import IntEnum
from typing import Any

import attrs

from meetq.core._validation import (
    convert_mapping,
    convert_timeout,
    headers_validator,
    max_retries_validator,
    name_validator,
    optional_str_validator,
    payload_validator,
    plain_str,
    retry_count_validator,
    timestamp_validator,
)
from meetq.core.errors import ValidationError

__all__ = ["DeadLetter", "LocalEvent", "Message", "Priority", "PubSubMessage", "new_id"]


def new_id() -> str:
    """A fresh random message id: a version-4 UUID as 32 hex digits."""
    # uuid.uuid4().hex, minus the UUID object (half the cost of building a Message):
    # 122 random bits, with the version (4) and variant (RFC 4122) bits set.
    number = int.from_bytes(os.urandom(16)) & _UUID4_CLEAR | _UUID4_SET
    return f"{number:032x}"


_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (4 << 76) | (0x8000 << 48)


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


def convert_priority(value: object) -> Priority:
    """attrs converter: ``Priority.parse`` under a name mypy's attrs plugin accepts."""
    return Priority.parse(value)


@attrs.frozen(kw_only=True)
class Message:
    """A unit of work for a ``MessageQueue``.

    ``timeout`` is the handler time limit in seconds (None: the queue's default).
    ``max_retries`` is how many times a failed attempt is retried (None: the queue's
    default), so a message runs at most ``max_retries + 1`` times. ``retry_count`` is
    filled in on delivery: 0 on the first attempt.
    """

    type: str = attrs.field(converter=plain_str, validator=name_validator)
    payload: Mapping[str, Any] = attrs.field(
        factory=dict, converter=convert_mapping, validator=payload_validator
    )
    priority: Priority = attrs.field(default=Priority.NORMAL, converter=convert_priority)
    id: str = attrs.field(factory=new_id, validator=name_validator)
    timestamp: float = attrs.field(factory=time.time, validator=timestamp_validator)
    retry_count: int = attrs.field(default=0, validator=retry_count_validator)
    max_retries: int | None = attrs.field(default=None, validator=max_retries_validator)
    timeout: float | None = attrs.field(default=None, converter=convert_timeout)
    source: str | None = attrs.field(default=None, validator=optional_str_validator)
    destination: str | None = attrs.field(default=None, validator=optional_str_validator)
    headers: Mapping[str, str] = attrs.field(
        factory=dict, converter=convert_mapping, validator=headers_validator
    )
    dedup_key: str | None = attrs.field(default=None, validator=optional_str_validator)

    @property
    def attempt(self) -> int:
        """Which attempt this delivery is: 1 for the first, 2 for the first retry, ..."""
        return self.retry_count + 1


@attrs.frozen(kw_only=True)
class DeadLetter:
    """A message that exhausted its attempts, kept beside the reason it failed.

    ``message`` is None when the stored bytes could not be decoded; ``raw`` then holds them.
    ``type`` is "" (and ``attempts``/``failed_at`` 0) when the backend's record of the
    dead letter was unreadable and its body did not decode either; ``error`` says why.
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

    type: str = attrs.field(converter=plain_str, validator=name_validator)
    payload: Mapping[str, Any] = attrs.field(
        factory=dict, converter=convert_mapping, validator=payload_validator
    )
    id: str = attrs.field(factory=new_id, validator=name_validator)
    timestamp: float = attrs.field(factory=time.time, validator=timestamp_validator)
    source: str | None = attrs.field(default=None, validator=optional_str_validator)
    channel: str | None = attrs.field(default=None, validator=optional_str_validator)
    headers: Mapping[str, str] = attrs.field(
        factory=dict, converter=convert_mapping, validator=headers_validator
    )


@attrs.frozen(kw_only=True)
class LocalEvent:
    """An in-process event delivered by the ``LocalEventBus``."""

    type: str = attrs.field(converter=plain_str, validator=name_validator)
    payload: Mapping[str, Any] = attrs.field(
        factory=dict, converter=convert_mapping, validator=payload_validator
    )
    source: str | None = attrs.field(default=None, validator=optional_str_validator)
    id: str = attrs.field(factory=new_id, validator=name_validator)
    timestamp: float = attrs.field(factory=time.time, validator=timestamp_validator)
