"""The ``memory:`` config section, owned by this backend (its ``BackendSpec.config``)."""

from __future__ import annotations

from typing import ClassVar

import attrs

from meetq.backend import str_field

__all__ = ["ISOLATED", "MemoryConfig"]

#: The ``broker`` value that gives a backend a broker of its own.
ISOLATED = "isolated"


@attrs.frozen(kw_only=True)
class MemoryConfig:
    """Which in-process broker a ``type: memory`` backend attaches to."""

    SECTION: ClassVar[str] = "memory"

    # Backends built from configs naming one broker share its queues and channels, as
    # processes on one Redis do; "isolated" gives each backend a private one.
    broker: str = str_field("default", max_len=200)
