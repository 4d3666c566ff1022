"""Wiring: the plugin manager with the built-in backends, and ``initialize_queue_system``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pluggy

from meetq.core.config import MeetqConfig, load_config, use_default_registry
from meetq.core.protocols import Backend
from meetq.core.registry import BackendContext, BackendRegistry
from meetq.manager._manager import QueueManager
from meetq.plugins import ENTRY_POINT_GROUP, MeetqHookSpecs

__all__ = ["build_registry", "initialize_queue_system", "make_plugin_manager"]


def make_plugin_manager(*, entry_points: bool = True) -> pluggy.PluginManager:
    """A fresh plugin manager holding the built-in backends and, unless told otherwise,
    every plugin installed under the ``meetq`` entry-point group."""
    from meetq.backends.memory import plugin as memory_plugin
    from meetq.backends.redis import plugin as redis_plugin

    pm = pluggy.PluginManager("meetq")
    pm.add_hookspecs(MeetqHookSpecs)
    pm.register(memory_plugin, name="meetq.backends.memory")
    pm.register(redis_plugin, name="meetq.backends.redis")
    if entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    return pm


def build_registry(pm: pluggy.PluginManager | None = None) -> BackendRegistry:
    """Run every plugin's ``meetq_register_backends`` into a new registry."""
    pm = pm if pm is not None else make_plugin_manager()
    registry = BackendRegistry()
    # One implementation at a time, in registration order (built-ins first), so a
    # duplicate name is blamed on the plugin that came later and took a used name.
    for impl in pm.hook.meetq_register_backends.get_hookimpls():
        registry._current_plugin = impl.plugin_name
        try:
            impl.function(registry=registry)
        finally:
            registry._current_plugin = "<direct>"
    return registry


# load_config without a registry checks the backends' sections with these (the kernel
# cannot import this layer, so it is told here, once, at import).
use_default_registry(build_registry)


async def initialize_queue_system(
    config: str | os.PathLike[str] | Mapping[str, Any] | MeetqConfig | None = None,
    redis: Any = None,
    *,
    registry: BackendRegistry | None = None,
) -> QueueManager:
    """Validate ``config`` and build a ``QueueManager`` (not started).

    ``redis`` is an existing asyncio client — ``redis.asyncio.Redis``, ``RedisCluster``,
    a Sentinel ``master_for`` client or ``fakeredis.FakeAsyncRedis`` — used as is by
    Redis backends (a blocking client is refused); without it they connect as the
    ``redis:`` section says (``mode``, addresses, TLS, credentials). The
    backends' config sections are checked by ``registry``'s specs (default: the built-ins
    and every installed plugin).
    """
    reg = registry if registry is not None else build_registry()
    cfg = load_config(config, registry=reg)
    context = BackendContext(config=cfg, client=redis)
    # Resolve every selected type before building anything, so a typo starts nothing.
    for section, enabled, type_name in (
        ("message_queue", cfg.message_queue.enabled, cfg.message_queue.type),
        ("event_bus", cfg.event_bus.enabled, cfg.event_bus.type),
    ):
        if enabled:
            reg.get(type_name, key=f"{section}.type")

    built: dict[str, Backend] = {}

    def backend_for(type_name: str) -> Backend:
        # One instance per backend, whatever alias names it (redis / redis_pubsub): a
        # second one would open a second client that nothing closes.
        name = reg.get(type_name).name
        if name not in built:
            built[name] = reg.create(name, context)
        return built[name]

    return QueueManager(cfg, backend_for)
