"""``ContractSuite``: every contract mixin in one class (needs pytest and pytest-asyncio)."""

from __future__ import annotations

from meetq.testing.dispatcher_suite import TaskDispatcherContract
from meetq.testing.event_bus_suite import EventBusContract
from meetq.testing.pubsub_suite import PubSubContract
from meetq.testing.scheduler_suite import TaskSchedulerContract
from meetq.testing.work_queue_suite import WorkQueueContract

__all__ = ["ContractSuite"]


class ContractSuite(
    WorkQueueContract,
    PubSubContract,
    EventBusContract,
    TaskDispatcherContract,
    TaskSchedulerContract,
):
    """Every contract mixin at once: a backend binds the whole suite with this class."""
