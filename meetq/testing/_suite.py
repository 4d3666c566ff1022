"""``ContractSuite``: every contract mixin in one class (needs pytest and pytest-asyncio)."""

from __future__ import annotations

from meetq.testing.backend_suite import BackendObjectContract
from meetq.testing.dispatcher_suite import TaskDispatcherContract
from meetq.testing.inspection_suite import InspectionContract
from meetq.testing.limits_suite import LimitsContract
from meetq.testing.pubsub_suite import PubSubContract
from meetq.testing.schedule_suite import ScheduleContract
from meetq.testing.tracking_suite import TrackingContract
from meetq.testing.work_queue_suite import WorkQueueContract

__all__ = ["ContractSuite"]


class ContractSuite(
    WorkQueueContract,
    InspectionContract,
    LimitsContract,
    PubSubContract,
    ScheduleContract,
    TaskDispatcherContract,
    TrackingContract,
    BackendObjectContract,
):
    """Every contract mixin at once: a backend binds the whole suite with this class."""
