"""Validators and converters shared by meetq's attrs value types.

Each raises ``ValidationError`` naming the field and the value, so bad input is refused
where it enters, with the same words whichever type it entered through.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from meetq.core._durations import parse_duration
from meetq.core.errors import ValidationError

MAX_TYPE_LENGTH = 200


def check_name(field: str, value: object) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_TYPE_LENGTH:
        raise ValidationError(
            field, value, f"expected a non-empty string of at most {MAX_TYPE_LENGTH} characters"
        )


def plain_str(value: Any) -> Any:
    """attrs converter: a ``str`` subclass (a ``StrEnum`` member such as ``TaskType``) is
    stored as the plain string it equals, so it encodes and travels as that string;
    anything else passes through to the validator unchanged."""
    if isinstance(value, str) and type(value) is not str:
        return str.__str__(value)
    return value


def name_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_name(attribute.name, value)


def optional_str_validator(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if value is not None and not isinstance(value, str):
        raise ValidationError(attribute.name, value, "expected a string or None")


def payload_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Mapping):
        raise ValidationError(attribute.name, value, "expected a mapping with string keys")
    for key in value:
        if not isinstance(key, str):
            raise ValidationError(f"{attribute.name}[{key!r}]", key, "keys must be strings")


def headers_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Mapping):
        raise ValidationError(attribute.name, value, "expected a mapping of str to str")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ValidationError(
                f"headers[{key!r}]", item, "header names and values must be strings"
            )


def max_retries_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1000:
        raise ValidationError(attribute.name, value, "expected an int from 0 to 1000, or None")


def retry_count_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValidationError(attribute.name, value, "expected a non-negative int")


def timestamp_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValidationError(attribute.name, value, "expected a Unix time in seconds")


def convert_timeout(value: object) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value, number_unit=1.0)
    except ValueError as exc:
        raise ValidationError("timeout", value, str(exc)) from None
    if seconds <= 0:
        raise ValidationError("timeout", value, "a handler timeout must be positive")
    return seconds


def convert_mapping(value: object) -> object:
    # Copy so later changes to the caller's dict cannot alter a published message.
    return dict(value) if isinstance(value, Mapping) else value


def is_async_callable(func: Callable[..., Any]) -> bool:
    """True for ``async def`` functions, partials of them and objects with ``async __call__``."""
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - we need the method, not callable()
    return call is not None and inspect.iscoroutinefunction(call)


def check_queue_options(queue_name: str, held: Any, asked: Any) -> None:
    """Refuse a second opening of a work queue with other dead-letter limits.

    A queue's dead letters are one store; two limits for it in one process would make
    the outcome depend on which ``MessageQueue`` happened to settle last.
    """
    if held is None or held == asked:
        return
    for field in attrs.fields(type(asked)):
        mine, theirs = getattr(held, field.name), getattr(asked, field.name)
        if mine != theirs:
            raise ValidationError(
                field.name.removesuffix("_ms"),
                theirs,
                f"queue {queue_name!r} is already open in this process with "
                f"{field.name}={mine!r}; use the same limits for every MessageQueue on it",
            )
