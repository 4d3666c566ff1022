"""The shipped contract suite and test helpers for meetq backends.

Bind every suite to a backend in one class::

    # conftest.py
    pytest_plugins = ["meetq.testing.pytest_plugin"]

    # test_my_backend.py
    class TestMyBackend(ContractSuite):
        @pytest.fixture
        def backend_config(self):
            return {"message_queue": {"type": "mine"}, "event_bus": {"type": "mine"}}

Tests skip only by a capability the backend does not declare (``durable``,
``cross_process``), never by backend name.
"""

from meetq.testing._base import BackendContract
from meetq.testing._redis_server import RedisServer, RedisServerUnavailable, free_port
from meetq.testing.dispatcher_suite import TaskDispatcherContract
from meetq.testing.event_bus_suite import EventBusContract
from meetq.testing.pubsub_suite import PubSubContract
from meetq.testing.scheduler_suite import TaskSchedulerContract
from meetq.testing.work_queue_suite import WorkQueueContract, eventually

__all__ = [
    "BackendContract",
    "ContractSuite",
    "EventBusContract",
    "PubSubContract",
    "RedisServer",
    "RedisServerUnavailable",
    "TaskDispatcherContract",
    "TaskSchedulerContract",
    "WorkQueueContract",
    "eventually",
    "free_port",
]


class ContractSuite(
    WorkQueueContract,
    PubSubContract,
    EventBusContract,
    TaskDispatcherContract,
    TaskSchedulerContract,
):
    """Every contract mixin at once: a backend binds the whole suite with this class."""
