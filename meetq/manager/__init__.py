"""Composition: ``QueueManager`` builds the components from one config; the guide's helpers."""

from meetq.manager._guide import (
    SYSTEM_EVENTS,
    emit_local_event,
    get_queue_stats,
    message_queue_from,
    publish_system_event,
    publish_task,
    pubsub_from,
    register_common_handlers,
    schedule_delayed_task,
    shutdown_queue_system,
)
from meetq.manager._manager import SERVICE_STARTED, SERVICE_STOPPING, QueueManager
from meetq.manager._system import build_registry, initialize_queue_system, make_plugin_manager

__all__ = [
    "QueueManager",
    "SERVICE_STARTED",
    "SERVICE_STOPPING",
    "SYSTEM_EVENTS",
    "build_registry",
    "emit_local_event",
    "get_queue_stats",
    "initialize_queue_system",
    "make_plugin_manager",
    "message_queue_from",
    "publish_system_event",
    "publish_task",
    "pubsub_from",
    "register_common_handlers",
    "schedule_delayed_task",
    "shutdown_queue_system",
]
