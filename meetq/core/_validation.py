"""Validators and converters shared by meetq's attrs value types.

Each raises ``ValidationError`` naming the field and the value, so bad input is refused
where it enters, with the same words whichever type it entered through.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from meetq.core._durations import MAX_DURATION, finite_float, parse_duration
from meetq.core.errors import ValidationError

MAX_TYPE_LENGTH = 200
#: How deep dicts and lists may nest in a payload (the payload itself is level 1).
#: Python's JSON encoder and decoder recurse once per level; this keeps every encode
#: and decode far from the interpreter's recursion limit, whatever stack it runs on.
MAX_PAYLOAD_DEPTH = 100
#: The most dead letters one ``dead_letters()`` or ``requeue_dead_letters()`` call handles.
MAX_DEAD_LETTER_BATCH = 10_000
# PubSub channel names (the namespace prefix not counted).
MAX_CHANNEL_LENGTH = 1000


def not_utf8(text: str) -> bool:
    """True when ``text`` cannot be encoded as UTF-8 (it holds a lone surrogate).

    Such a name cannot reach Redis (or any wire) and would be a channel or key nobody
    can ever use, so every name is checked where it enters."""
    if text.isascii():
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def check_text(field: str, value: str) -> None:
    if not_utf8(value):
        raise ValidationError(field, value, "not valid Unicode (a lone surrogate)")


def check_name(field: str, value: object) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_TYPE_LENGTH:
        raise ValidationError(
            field, value, f"expected a non-empty string of at most {MAX_TYPE_LENGTH} characters"
        )
    check_text(field, value)


def check_key(field: str, value: object) -> None:
    """A lookup by id or type: anything but a string is a caller's mistake, named as
    such (a list would otherwise surface as ``TypeError: unhashable type``)."""
    if not isinstance(value, str):
        raise ValidationError(field, value, "expected a string")


def check_seconds(field: str, value: object) -> float:
    """A duration argument in seconds (a number), 0 to ``MAX_DURATION``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(field, value, "expected seconds as a number")
    try:
        return parse_duration(value, number_unit=1.0)
    except ValueError as exc:
        raise ValidationError(field, value, str(exc)) from None


def check_unix_time(field: str, value: object) -> float:
    """A point in time as Unix seconds: finite, not negative, within ``MAX_DURATION``
    of now (farther than that is a unit mistake, and no timer can wait that long)."""
    try:
        seconds = finite_float(value)
    except ValueError as exc:
        raise ValidationError(field, value, f"expected a Unix time in seconds: {exc}") from None
    if seconds < 0 or seconds > time.time() + MAX_DURATION:
        raise ValidationError(
            field, value, "expected a Unix time in seconds, from 0 to about 100 years ahead"
        )
    return seconds


def check_channel(field: str, value: object) -> None:
    """A PubSub channel name: a non-empty string Redis can carry."""
    if not isinstance(value, str) or not value or len(value) > MAX_CHANNEL_LENGTH:
        raise ValidationError(
            field, value, f"expected a non-empty string of at most {MAX_CHANNEL_LENGTH} characters"
        )
    # Redis cannot carry it, and memory would accept a channel no publish can reach.
    check_text(field, value)


def check_count(field: str, value: object, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ValidationError(field, value, f"expected an int from 0 to {maximum}")
    return value


def plain_str(value: Any) -> Any:
    """attrs converter: a ``str`` subclass (a ``StrEnum`` member such as ``TaskType``) is
    stored as the plain string it equals, so it encodes and travels as that string;
    anything else passes through to the validator unchanged."""
    if isinstance(value, str) and type(value) is not str:
        return str.__str__(value)
    return value


def name_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    # Hot path (every message built): the common ASCII name is accepted inline; anything
    # else gets the full check and its message.
    if type(value) is str and 0 < len(value) <= MAX_TYPE_LENGTH and value.isascii():
        return
    check_name(attribute.name, value)


def optional_str_validator(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if value is None or (type(value) is str and value.isascii()):
        return
    if not isinstance(value, str):
        raise ValidationError(attribute.name, value, "expected a string or None")
    check_text(attribute.name, value)


def payload_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is dict:
        for key in value:
            if type(key) is not str:
                break
        else:
            return
    if not isinstance(value, Mapping):
        raise ValidationError(attribute.name, value, "expected a mapping with string keys")
    for key in value:
        if not isinstance(key, str):
            raise ValidationError(f"{attribute.name}[{key!r}]", key, "keys must be strings")


def headers_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is dict and not value:
        return
    if not isinstance(value, Mapping):
        raise ValidationError(attribute.name, value, "expected a mapping of str to str")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ValidationError(
                f"headers[{key!r}]", item, "header names and values must be strings"
            )


def max_retries_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None or (type(value) is int and 0 <= value <= 1000):
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1000:
        raise ValidationError(attribute.name, value, "expected an int from 0 to 1000, or None")


def retry_count_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is int and value >= 0:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValidationError(attribute.name, value, "expected a non-negative int")


def timestamp_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    # Hot path (every message built): the common float is checked inline.
    if type(value) is float and 0.0 <= value < math.inf:
        return
    try:
        ok = finite_float(value) >= 0
    except ValueError:
        ok = False
    if not ok:
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
    if type(value) is dict:
        return value.copy()
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
