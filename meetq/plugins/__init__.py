"""Plugin discovery: the ``meetq_register_backends`` hook and the plugin manager.

A third-party backend package exposes a module or object with a hook implementation
and names it in the ``meetq`` entry-point group::

    [project.entry-points.meetq]
    mybackend = "mybackend.plugin"

Built-in backends register through the same hook, only without the entry-point lookup
(``meetq.make_plugin_manager`` adds them).
"""

from __future__ import annotations

import pluggy

from meetq.core.registry import BackendRegistry

__all__ = ["ENTRY_POINT_GROUP", "MeetqHookSpecs", "hookimpl", "hookspec"]

ENTRY_POINT_GROUP = "meetq"
hookspec = pluggy.HookspecMarker("meetq")
hookimpl = pluggy.HookimplMarker("meetq")


class MeetqHookSpecs:
    """The hooks a meetq plugin may implement."""

    @hookspec
    def meetq_register_backends(self, registry: BackendRegistry) -> None:
        """Register backends with ``registry.register(BackendSpec(...))``; return nothing."""
