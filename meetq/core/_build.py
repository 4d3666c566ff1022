"""How every component turns its config and keyword overrides into one attrs value.

Design (why it looks like this):

- ``MessageQueue``, ``PubSub``, ``LocalEventBus``, ``TaskScheduler`` and
  ``TaskDispatcher`` each take their config section (the attrs value ``load_config``
  builds, or a mapping of its keys) plus keyword overrides, and all go through
  ``build_config``: one conversion (durations with units, ranges, choices) and one set
  of messages, did-you-mean included, the same as a config file's. No constructor checks
  its settings by hand.
- Settings given in code are the caller's decision: ``MEETQ_*`` variables override whole
  configs (a file, ``initialize_queue_system``), never a component built in code.
- A component whose settings are plain constructor arguments (``LocalEventBus(workers=0)``)
  reports a bad one as a ``ValidationError`` naming the argument (``as_arguments=True``);
  one built from a section reports a ``ConfigError`` naming ``section.key``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import attrs

from meetq.core.config import _build_section
from meetq.core.errors import ConfigError, ValidationError

__all__ = ["build_config"]

C = TypeVar("C")


def build_config(
    cls: type[C],
    config: C | Mapping[str, Any] | None,
    overrides: Mapping[str, Any],
    *,
    as_arguments: bool = False,
) -> C:
    """``config`` (an instance of the section class ``cls``, a mapping of its keys, or
    None for the defaults) with ``overrides`` applied, every value checked and converted
    as in a config file."""
    section: str = getattr(cls, "SECTION")  # noqa: B009  (a ClassVar mypy cannot see on C)
    try:
        if isinstance(config, cls):
            if not overrides:
                return config
            # Convert only the overrides (the built value's durations are already seconds).
            converted = _build_section(section, cls, overrides)
            return attrs.evolve(config, **{k: getattr(converted, k) for k in overrides})  # type: ignore[misc]
        if config is None:
            raw: dict[str, Any] = {}
        elif isinstance(config, Mapping):
            raw = dict(config)
        else:
            raise ValidationError(
                "config", config, f"expected a {cls.__name__}, a mapping of its keys or None"
            )
        raw.update(overrides)
        return _build_section(section, cls, raw)  # type: ignore[no-any-return]
    except ConfigError as exc:
        key = exc.key.removeprefix(f"{section}.")
        if as_arguments and key in overrides:
            raise ValidationError(key, exc.value, exc.problem) from None
        raise
