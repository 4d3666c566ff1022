"""Composition: ``QueueManager`` builds the components from one config."""

from meetq.manager._manager import QueueManager
from meetq.manager._system import build_registry, initialize_queue_system, make_plugin_manager

__all__ = ["QueueManager", "build_registry", "initialize_queue_system", "make_plugin_manager"]
