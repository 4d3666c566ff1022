"""Parsing of durations given in config or arguments.

A number is read in the unit the seed's guide used for that key (seconds for
``visibility_timeout``, milliseconds for ``poll_interval``); a string carries its own unit.
"""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)\s*$")


def parse_duration(value: object, *, number_unit: float) -> float:
    """Return ``value`` in seconds, or raise ``ValueError`` saying why.

    ``number_unit`` is the size in seconds of one unit of a bare number.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, '30s' or '100ms', not a boolean")
    if isinstance(value, int | float):
        seconds = float(value) * number_unit
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if match is None:
            raise ValueError("expected a duration such as '30s', '100ms', '5m', '2h' or '1d'")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"expected a duration, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be finite and not negative")
    return seconds
