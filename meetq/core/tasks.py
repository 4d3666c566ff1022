"""The value types of tasks: the in-process scheduler's and the dispatcher's.

They live in the kernel so that the components' protocols (``meetq.core.protocols``)
can name them without importing the components that run them.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

import attrs

from meetq.core._validation import (
    check_seconds,
    check_unix_time,
    convert_mapping,
    convert_timeout,
    headers_validator,
    max_retries_validator,
    name_validator,
    payload_validator,
    plain_str,
)
from meetq.core.errors import ValidationError
from meetq.core.types import Priority, convert_priority, new_id

__all__ = [
    "DispatchStatus",
    "ReceivedTask",
    "Task",
    "TaskHandler",
    "TaskRequest",
    "TaskResponse",
    "TaskSnapshot",
    "TaskStatus",
]

#: A scheduler task's handler receives its ``Task``; it may be ``async def`` or a plain
#: function (which runs in a thread). Its return value becomes the task's ``result``.
TaskHandler = Callable[["Task"], Any]

#: The most retries a scheduler task may ask for.
MAX_RETRIES = 1000


class TaskStatus(enum.StrEnum):
    """Where a task is in its life. The last four are final."""

    #: Ready, waiting for a free worker.
    PENDING = "pending"
    #: Delayed: waiting for its ``scheduled_at`` time.
    SCHEDULED = "scheduled"
    #: An attempt is running now.
    RUNNING = "running"
    #: An attempt failed or timed out; waiting out the backoff before the next attempt.
    RETRYING = "retrying"
    #: The handler returned; its return value is the ``result``.
    COMPLETED = "completed"
    #: The last allowed attempt raised an exception.
    FAILED = "failed"
    #: Cancelled by ``cancel_task`` or by ``stop()`` before it could finish.
    CANCELLED = "cancelled"
    #: The last allowed attempt ran past the task's ``timeout`` and was cancelled.
    TIMED_OUT = "timed_out"

    @property
    def is_final(self) -> bool:
        """True for completed, failed, cancelled and timed_out: nothing more will happen."""
        return self in _FINAL


_FINAL = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMED_OUT}
)


def _handler_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not callable(value):
        raise ValidationError(
            attribute.name, value, "expected a callable taking the Task (async def or plain)"
        )


def _task_retries_validator(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_RETRIES:
        raise ValidationError(attribute.name, value, f"expected an int from 0 to {MAX_RETRIES}")


def _convert_scheduled_at(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        try:
            seconds = value.timestamp()  # a naive datetime is local time, as in Python itself
        except (OverflowError, OSError, ValueError) as exc:
            raise ValidationError("scheduled_at", value, f"not a usable time: {exc}") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = check_unix_time("scheduled_at", value)
    else:
        raise ValidationError(
            "scheduled_at",
            value,
            "expected a datetime (aware, or naive meaning local time), Unix seconds, or None",
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValidationError("scheduled_at", value, "expected a finite, non-negative Unix time")
    return seconds


@attrs.frozen(kw_only=True)
class Task:
    """One unit of in-process work for a ``TaskScheduler``.

    ``handler(task)`` is called for each attempt; a plain function runs in a thread.
    ``timeout`` is the limit per attempt in seconds (or ``"30s"``; None: no limit).
    ``max_retries`` is how many times a failed or timed-out attempt is retried, so the
    handler runs at most ``max_retries + 1`` times. ``scheduled_at`` delays the first
    attempt to that moment: a ``datetime`` (aware, or naive meaning local time) or Unix
    seconds; it is stored as Unix seconds, and a time in the past means "now".
    """

    type: str = attrs.field(converter=plain_str, validator=name_validator)
    handler: TaskHandler = attrs.field(validator=_handler_validator)
    payload: Mapping[str, Any] = attrs.field(
        factory=dict, converter=convert_mapping, validator=payload_validator
    )
    priority: Priority = attrs.field(default=Priority.NORMAL, converter=convert_priority)
    timeout: float | None = attrs.field(default=None, converter=convert_timeout)
    max_retries: int = attrs.field(default=0, validator=_task_retries_validator)
    scheduled_at: float | None = attrs.field(default=None, converter=_convert_scheduled_at)
    id: str = attrs.field(factory=new_id, validator=name_validator)


@attrs.frozen(kw_only=True)
class TaskSnapshot:
    """The state of a task at one moment (a copy: it does not change afterwards).

    ``attempts`` counts attempts started. ``error`` describes the latest failed attempt
    (``"ValueError: ..."`` or the timeout), even if a later attempt succeeded. Times are
    Unix seconds: ``scheduled_at`` is when the first attempt was due (None: at once),
    ``started_at`` when the latest attempt started, ``finished_at`` when the task reached
    a final status.
    """

    task: Task
    status: TaskStatus
    attempts: int
    result: Any = None
    error: str | None = None
    submitted_at: float
    scheduled_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def id(self) -> str:
        """The task's id."""
        return self.task.id

    @property
    def type(self) -> str:
        """The task's type."""
        return self.task.type

    @property
    def done(self) -> bool:
        """True once the status is final."""
        return self.status.is_final


class DispatchStatus(StrEnum):
    """Where a dispatched task stands, as its dispatcher knows it."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True for completed, failed, timed_out and cancelled."""
        return self in (self.COMPLETED, self.FAILED, self.TIMED_OUT, self.CANCELLED)


def _timeout_converter(value: object) -> float:
    seconds = check_seconds("timeout", value)
    if seconds <= 0:
        raise ValidationError("timeout", value, "must be positive")
    return seconds


def _retries_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        raise ValidationError("max_retries", value, "expected an int from 0 to 1000")
    max_retries_validator(instance, attribute, value)


def _callback_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not callable(value):
        raise ValidationError("callback", value, "expected a callable taking a TaskResponse")


def _metadata_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    try:
        headers_validator(instance, attribute, value)
    except ValidationError as exc:
        field = exc.field.replace("headers", "metadata")
        raise ValidationError(field, exc.value, exc.problem) from None


@attrs.frozen(kw_only=True)
class TaskRequest:
    """A task to run in the service that owns ``type``.

    ``timeout`` (seconds) limits each attempt; a failed attempt is retried up to
    ``max_retries`` times. ``callback`` (async or plain) receives the final
    ``TaskResponse`` once. ``metadata`` (str to str) travels with the task.
    """

    type: str = attrs.field(converter=plain_str, validator=name_validator)
    payload: Mapping[str, Any] = attrs.field(
        factory=dict, converter=convert_mapping, validator=payload_validator
    )
    priority: Priority = attrs.field(default=Priority.NORMAL, converter=convert_priority)
    timeout: float = attrs.field(default=30.0, converter=_timeout_converter)
    max_retries: int = attrs.field(default=3, validator=_retries_validator)
    callback: Callable[[TaskResponse], Any] | None = attrs.field(
        default=None, validator=_callback_validator, eq=False
    )
    metadata: Mapping[str, str] = attrs.field(
        factory=dict, converter=convert_mapping, validator=_metadata_validator
    )
    id: str = attrs.field(factory=new_id, validator=name_validator)


@attrs.frozen(kw_only=True)
class TaskResponse:
    """A snapshot of a task's status; ``result`` is the handler's return value."""

    task_id: str
    type: str
    status: DispatchStatus
    result: Any = None
    error: str | None = None
    attempts: int = 0
    service: str | None = None
    created_at: float
    updated_at: float


@attrs.frozen(kw_only=True)
class ReceivedTask:
    """What a serving handler receives: the task and which attempt this is (1-based)."""

    id: str
    type: str
    payload: Mapping[str, Any]
    metadata: Mapping[str, str]
    priority: Priority
    attempt: int
    max_attempts: int
