"""meetq: reliable asyncio work queues, broadcast and local events, on Redis or in memory.

Pick a backend with ``type:`` in config; everything else behaves the same on each.
"""

from meetq.backends.memory._config import MemoryConfig
from meetq.backends.redis._config import RedisConfig
from meetq.broadcast._pubsub import PubSub
from meetq.core.config import (
    EventBusConfig,
    MeetqConfig,
    MessageQueueConfig,
    TaskDispatcherConfig,
    TaskSchedulerConfig,
    load_config,
)
from meetq.core.errors import (
    BackendAccessDeniedError,
    BackendError,
    BackendNotFoundError,
    BackendUnavailableError,
    ClosedError,
    ConfigError,
    HandlerTimeout,
    MeetqError,
    MissingDependencyError,
    PluginError,
    QueueFull,
    ResultError,
    SerializationError,
    TrackingUnsupported,
    ValidationError,
)
from meetq.core.middleware import Delivery, Middleware
from meetq.core.registry import BackendContext, BackendRegistry, BackendSpec, Requirement
from meetq.core.serialization import JsonSerializer, Serializer
from meetq.core.task_types import TaskType
from meetq.core.tracking import MessageStatus
from meetq.core.types import DeadLetter, LocalEvent, Message, Priority, PubSubMessage
from meetq.dispatch._dispatcher import (
    DispatchStatus,
    ReceivedTask,
    TaskDispatcher,
    TaskRequest,
    TaskResponse,
)
from meetq.inprocess._event_bus import LocalEventBus
from meetq.inprocess._scheduler import Task, TaskScheduler, TaskSnapshot, TaskStatus
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
from meetq.queue._inspection import QueueInfo, traceback_summary
from meetq.queue._message_queue import MessageQueue
from meetq.queue._tracking import DeliveryContext, current_delivery

__all__ = [
    "BackendAccessDeniedError",
    "BackendContext",
    "BackendError",
    "BackendNotFoundError",
    "BackendRegistry",
    "BackendSpec",
    "BackendUnavailableError",
    "ClosedError",
    "ConfigError",
    "DeadLetter",
    "Delivery",
    "DeliveryContext",
    "DispatchStatus",
    "EventBusConfig",
    "HandlerTimeout",
    "JsonSerializer",
    "LocalEvent",
    "LocalEventBus",
    "MeetqConfig",
    "MeetqError",
    "MemoryConfig",
    "Message",
    "MessageQueue",
    "MessageQueueConfig",
    "MessageStatus",
    "Middleware",
    "MissingDependencyError",
    "PluginError",
    "Priority",
    "PubSub",
    "PubSubMessage",
    "QueueFull",
    "QueueInfo",
    "QueueManager",
    "ReceivedTask",
    "RedisConfig",
    "Requirement",
    "ResultError",
    "SERVICE_STARTED",
    "SERVICE_STOPPING",
    "SYSTEM_EVENTS",
    "SerializationError",
    "Serializer",
    "Task",
    "TaskDispatcher",
    "TaskDispatcherConfig",
    "TaskRequest",
    "TaskResponse",
    "TaskScheduler",
    "TaskSchedulerConfig",
    "TaskSnapshot",
    "TaskStatus",
    "TaskType",
    "TrackingUnsupported",
    "ValidationError",
    "build_registry",
    "current_delivery",
    "emit_local_event",
    "get_queue_stats",
    "initialize_queue_system",
    "load_config",
    "make_plugin_manager",
    "message_queue_from",
    "publish_system_event",
    "publish_task",
    "pubsub_from",
    "register_common_handlers",
    "schedule_delayed_task",
    "shutdown_queue_system",
    "traceback_summary",
]

__version__ = "0.1.0"
