"""The shipped contract suite and test helpers for meetq backends.

The suite holds what a backend can change — the work queue, broadcast, and the
dispatcher over the queue — and nothing that runs in-process on every backend alike
(the local event bus and the scheduler are tested once, in meetq's own tests). Bind all
of it to a backend in one class; installing meetq registers the fixtures with pytest
(``pytest11`` entry point), so no ``pytest_plugins`` line is needed::

    class TestMyBackend(ContractSuite):
        @pytest.fixture
        def backend_config(self):
            return {"message_queue": {"type": "mine"}, "event_bus": {"type": "mine"}}

Every async test carries its own asyncio mark (strict mode works). A test that needs
more than the contract is marked ``@requires(CAP_DURABLE)`` and skipped, naming the
missing capability, on a backend whose ``BackendSpec`` does not declare it — never by
backend name. ``RecordingBackend`` wraps any backend to record calls and inject faults.

``RecordingBackend``, ``Call``, ``Collector``, ``RedisServer``, ``RedisSentinelSetup``,
``LocalRedisCluster`` (a private multi-primary Redis Cluster), ``ClusterFailover``,
``RedisServerUnavailable``, ``free_port``, ``eventually``, ``wait_until``, ``QUICK`` and
``TIMEOUT`` need nothing beyond meetq, so a script or another test runner can use them.
The contract classes and ``requires`` need ``pytest`` and ``pytest-asyncio``
(``pip install 'meetq[test]'``) and load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from meetq.testing._helpers import QUICK, TIMEOUT, Collector, eventually, wait_until
from meetq.testing._recording import Call, RecordingBackend
from meetq.testing._redis_cluster import ClusterFailover, LocalRedisCluster
from meetq.testing._redis_sentinel import RedisSentinelSetup
from meetq.testing._redis_server import RedisServer, RedisServerUnavailable, free_port

if TYPE_CHECKING:
    from meetq.testing._base import BackendContract
    from meetq.testing._marks import requires
    from meetq.testing._suite import ContractSuite
    from meetq.testing.backend_suite import BackendObjectContract
    from meetq.testing.dispatcher_suite import TaskDispatcherContract
    from meetq.testing.inspection_suite import InspectionContract
    from meetq.testing.limits_suite import LimitsContract
    from meetq.testing.pubsub_suite import PubSubContract
    from meetq.testing.schedule_suite import ScheduleContract
    from meetq.testing.tracking_suite import TrackingContract
    from meetq.testing.work_queue_suite import WorkQueueContract

__all__ = [
    "QUICK",
    "TIMEOUT",
    "BackendContract",
    "BackendObjectContract",
    "Call",
    "ClusterFailover",
    "Collector",
    "ContractSuite",
    "InspectionContract",
    "LimitsContract",
    "LocalRedisCluster",
    "PubSubContract",
    "RecordingBackend",
    "RedisSentinelSetup",
    "RedisServer",
    "RedisServerUnavailable",
    "ScheduleContract",
    "TaskDispatcherContract",
    "TrackingContract",
    "WorkQueueContract",
    "eventually",
    "free_port",
    "requires",
    "wait_until",
]

# The pytest-based names (the classes and the mark) and the module each lives in. Importing
# them eagerly would make ``import meetq.testing`` fail without pytest, for the helpers
# above that do not need it.
_PYTEST_CLASSES = {
    "BackendContract": "meetq.testing._base",
    "BackendObjectContract": "meetq.testing.backend_suite",
    "ContractSuite": "meetq.testing._suite",
    "InspectionContract": "meetq.testing.inspection_suite",
    "LimitsContract": "meetq.testing.limits_suite",
    "requires": "meetq.testing._marks",
    "PubSubContract": "meetq.testing.pubsub_suite",
    "ScheduleContract": "meetq.testing.schedule_suite",
    "TaskDispatcherContract": "meetq.testing.dispatcher_suite",
    "TrackingContract": "meetq.testing.tracking_suite",
    "WorkQueueContract": "meetq.testing.work_queue_suite",
}
_PYTEST_PACKAGES = ("pytest", "pytest_asyncio")


def __getattr__(name: str) -> Any:
    module_name = _PYTEST_CLASSES.get(name)
    if module_name is None:
        raise AttributeError(f"module 'meetq.testing' has no attribute {name!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name not in _PYTEST_PACKAGES:
            raise
        raise ImportError(
            f"meetq.testing.{name} is a pytest class and needs the {exc.name!r} package, "
            "which is not installed; install it with: pip install 'meetq[test]'",
            name=exc.name,
        ) from exc
    value = getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
