"""The whole shipped contract suite, bound to the three built-in setups.

Memory, Redis on fakeredis, and Redis on a private real redis-server: one class each,
no test of its own — what a user can observe must not depend on which one runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fakeredis
import pytest

from meetq.testing import ContractSuite


class TestMemory(ContractSuite):
    @pytest.fixture
    def backend_config(self) -> Mapping[str, Any]:
        return {"message_queue": {"type": "memory"}, "event_bus": {"type": "memory"}}


class TestFakeRedis(ContractSuite):
    @pytest.fixture
    def backend_config(self) -> Mapping[str, Any]:
        return {"message_queue": {"type": "redis"}, "event_bus": {"type": "redis_pubsub"}}

    @pytest.fixture
    def backend_client(self) -> Any:
        return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())


class TestRealRedis(ContractSuite):
    @pytest.fixture
    def backend_config(self, meetq_redis_url: str) -> Mapping[str, Any]:
        return {
            "redis": {"url": meetq_redis_url},
            "message_queue": {"type": "redis"},
            "event_bus": {"type": "redis_pubsub"},
        }
