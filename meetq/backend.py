"""The one import face for backend authors.

A backend plugin imports from here and from nothing else of meetq's: the interface it
implements (``Backend``, ``WorkQueueBackend``, ``PubSubTransport`` and the values they
exchange), the registry it fills in, the capability names it may declare, the hook
marker, the errors a backend raises, and the field helpers its own config section is
made with (``BackendSpec.config``). Everything here is re-exported from the kernel
(``meetq.core``), which imports nothing above it, so a backend never sits in an import
cycle with the components that use it.
"""

from meetq.core._durations import parse_duration
from meetq.core.config import (
    SECRET_SHOWN,
    MeetqConfig,
    bool_field,
    choice_field,
    duration_field,
    float_field,
    int_field,
    str_field,
    str_list_field,
)
from meetq.core.errors import (
    BackendAccessDeniedError,
    BackendError,
    BackendUnavailableError,
    ClosedError,
    ConfigError,
    MeetqError,
    MissingDependencyError,
    SerializationError,
    ValidationError,
)
from meetq.core.protocols import (
    CAP_CROSS_PROCESS,
    CAP_DURABLE,
    CAP_LIMITS,
    CAP_SCHEDULES,
    CAP_TRACKING,
    CAPABILITIES,
    COUNTER_NAMES,
    OUTCOME_COUNTERS,
    Backend,
    Claimed,
    DeadRecord,
    DeliveryCallback,
    ExchangeResult,
    LeaseRef,
    Maintenance,
    PubSubTransport,
    QueueSnapshot,
    ScheduleStore,
    Settlement,
    StoredMessage,
    StoredSchedule,
    SyncBackend,
    SyncWorkQueue,
    TransportMessage,
    WakeCallback,
    WorkQueueBackend,
    WorkQueueOptions,
)
from meetq.core.registry import BackendContext, BackendRegistry, BackendSpec, Requirement
from meetq.plugins import hookimpl

__all__ = [
    "CAPABILITIES",
    "CAP_CROSS_PROCESS",
    "CAP_DURABLE",
    "CAP_LIMITS",
    "CAP_SCHEDULES",
    "CAP_TRACKING",
    "COUNTER_NAMES",
    "OUTCOME_COUNTERS",
    "SECRET_SHOWN",
    "Backend",
    "BackendAccessDeniedError",
    "BackendContext",
    "BackendError",
    "BackendRegistry",
    "BackendSpec",
    "BackendUnavailableError",
    "Claimed",
    "ClosedError",
    "ConfigError",
    "DeadRecord",
    "DeliveryCallback",
    "ExchangeResult",
    "LeaseRef",
    "Maintenance",
    "MeetqConfig",
    "MeetqError",
    "MissingDependencyError",
    "PubSubTransport",
    "QueueSnapshot",
    "Requirement",
    "ScheduleStore",
    "SerializationError",
    "Settlement",
    "StoredMessage",
    "StoredSchedule",
    "SyncBackend",
    "SyncWorkQueue",
    "TransportMessage",
    "ValidationError",
    "WakeCallback",
    "WorkQueueBackend",
    "WorkQueueOptions",
    "bool_field",
    "choice_field",
    "duration_field",
    "float_field",
    "hookimpl",
    "int_field",
    "parse_duration",
    "str_field",
    "str_list_field",
]
