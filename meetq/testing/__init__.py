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

``RedisServer``, ``RedisServerUnavailable``, ``free_port`` and ``eventually`` need nothing
beyond meetq, so a script or another test runner can use them. The contract classes are
pytest classes: they load on first use and need ``pytest`` and ``pytest-asyncio``
(``pip install 'meetq[test]'``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from meetq.testing._helpers import QUICK, TIMEOUT, eventually, wait_until
from meetq.testing._redis_server import RedisServer, RedisServerUnavailable, free_port

if TYPE_CHECKING:
    from meetq.testing._base import BackendContract
    from meetq.testing._suite import ContractSuite
    from meetq.testing.dispatcher_suite import TaskDispatcherContract
    from meetq.testing.pubsub_suite import PubSubContract
    from meetq.testing.work_queue_suite import WorkQueueContract

__all__ = [
    "QUICK",
    "TIMEOUT",
    "BackendContract",
    "ContractSuite",
    "PubSubContract",
    "RedisServer",
    "RedisServerUnavailable",
    "TaskDispatcherContract",
    "WorkQueueContract",
    "eventually",
    "free_port",
    "wait_until",
]

# The pytest-based names and the module each lives in. Importing them eagerly would make
# ``import meetq.testing`` fail without pytest, for the helpers above that do not need it.
_PYTEST_CLASSES = {
    "BackendContract": "meetq.testing._base",
    "ContractSuite": "meetq.testing._suite",
    "PubSubContract": "meetq.testing.pubsub_suite",
    "TaskDispatcherContract": "meetq.testing.dispatcher_suite",
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
