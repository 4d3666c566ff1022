"""The one way meetq builds a frozen attrs value without running its validators.

Design (why it looks like this):

- The hot paths (decoding a message meetq itself encoded, emitting a local event) have
  already checked every value in one pass; running the attrs validators again would
  cost more than the rest of the path together. So they fill the instance directly, the
  way attrs' own ``__init__`` does (``object.__setattr__`` on a new object).
- Filling fields by name has one trap: a field added to the class later would be left
  unset, silently. ``trusted_builder`` names every field once and compares the list
  with the class when the module that uses it is imported: a change to the class
  without its fast path fails at import, not in production.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

__all__ = ["trusted_builder"]

T = TypeVar("T")


def trusted_builder(cls: type[T], *fields: str) -> Callable[..., T]:
    """A function ``build(<fields>)`` (positional, in this order) that makes a ``cls``
    from values the caller has already checked, without validators or converters.

    Raises ``ImportError`` when ``fields`` is not exactly ``cls``'s attrs fields in
    their declared order (call it at module level, so that happens at import).
    """
    declared = tuple(field.name for field in attrs.fields(cls))  # type: ignore[arg-type]
    if fields != declared:
        raise ImportError(
            f"the fast path of {cls.__module__}.{cls.__qualname__} fills {fields}, but "
            f"its fields are {declared}: update the fast path with the class"
        )
    # Generated like attrs' own __init__: no loop, and the helpers bound as defaults so
    # they are local variables at call time (no global lookups).
    lines = [
        f"def build({', '.join(fields)}, *, _new=_new, _set=_set, cls=cls):",
        "    instance = _new(cls)",
    ]
    lines += [f"    _set(instance, {name!r}, {name})" for name in fields]
    lines.append("    return instance")
    namespace: dict[str, Any] = {"_new": object.__new__, "_set": object.__setattr__, "cls": cls}
    exec("\n".join(lines), namespace)  # our own field names, checked above
    build: Callable[..., T] = namespace["build"]
    build.__qualname__ = f"trusted_builder.<{cls.__qualname__}>"
    return build
