"""The ``memory:`` config section, owned by this backend (its ``BackendSpec.config``)."""

from __future__ import annotations

from typing import ClassVar

import attrs

from meetq.backend import duration_field, str_field

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
    # The sync producer (meetq.sync) hands each call to the event loop holding the
    # broker; a loop that does not run it within this long (blocked, stopping) fails
    # the call with BackendUnavailableError.
    sync_call_timeout: float = duration_field(5.0, 1.0, minimum=0.001)
