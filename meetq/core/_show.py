"""Showing a user's value or field path inside an error message.

Building the message of an error must never raise a second error or take long: a payload
nested 5,000 deep, an int of 10,000 digits or an object whose ``__repr__`` raises is
exactly the bad input the error reports.
"""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = ["show_field", "show_value"]


class _SafeRepr(reprlib.Repr):
    """``repr`` that cannot fail or take long: bounded depth and lengths, and no
    decimal conversion of huge ints (Python refuses those past 4,300 digits)."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            digits = int(x.bit_length() * 0.30103) + 1
            return f"<int of about {digits} digits>"
        return int.__repr__(x)

    def repr1(self, x: Any, level: int) -> str:
        try:
            return super().repr1(x, level)
        except Exception:  # a broken __repr__ must not replace the error being raised
            return f"<{type(x).__name__} object>"


_REPR = _SafeRepr()
_REPR.maxlevel = 3
_REPR.maxstring = 90
_REPR.maxother = 90


def show_field(field: str) -> str:
    # A field path is built from user keys (payload.<key>[3]...), so it can be as long
    # as the input itself; the attribute keeps it whole, the message a readable part.
    return field if len(field) <= 120 else f"{field[:80]}...{field[-37:]}"


def show_value(value: Any) -> str:
    text = _REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
