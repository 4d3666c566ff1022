"""Parsing of durations given in config or arguments.

A number is read in the unit the seed's guide used for that key (seconds for
``visibility_timeout``, milliseconds for ``poll_interval``); a string carries its own unit.

Every duration meetq takes is at most ``MAX_DURATION`` seconds (about 100 years): far
beyond any real timeout or delay, yet small enough that a time in milliseconds stays an
exact integer in a double (Redis sorted-set scores) and fits every OS timer.
"""

from __future__ import annotations

import math
import re

__all__ = ["MAX_DURATION", "finite_float", "parse_duration"]

MAX_DURATION = 100 * 365 * 86400.0

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)\s*$")


def finite_float(value: object) -> float:
    """``value`` (an int or float, not a bool) as a finite float, or ``ValueError``.

    ``float()`` of an int beyond the double range raises ``OverflowError``; that is bad
    input like NaN is, so it is reported the same way.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("the number is too large") from None
    if not math.isfinite(number):
        raise ValueError("expected a finite number (not NaN or infinity)")
    return number


def parse_duration(value: object, *, number_unit: float) -> float:
    """Return ``value`` in seconds, or raise ``ValueError`` saying why.

    ``number_unit`` is the size in seconds of one unit of a bare number.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, '30s' or '100ms', not a boolean")
    if isinstance(value, int | float):
        seconds = finite_float(value) * number_unit
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise ValueError("expected a duration such as '30s', '100ms', '5m', '2h' or '1d'")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"expected a duration, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be finite and not negative")
    if seconds > MAX_DURATION:
        raise ValueError(f"a duration must be at most {MAX_DURATION:.0f}s (about 100 years)")
    return seconds
