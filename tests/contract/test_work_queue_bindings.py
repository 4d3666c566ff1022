"""The work-queue contract bound to the three built-in setups."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from meetq.testing.work_queue_suite import WorkQueueContract


class TestMemoryWorkQueue(WorkQueueContract):
    @pytest.fixture
    def backend_config(self) -> dict[str, Any]:
        return {"message_queue": {"type": "memory"}, "event_bus": {"type": "memory"}}


class TestFakeRedisWorkQueue(WorkQueueContract):
    @pytest.fixture
    def backend_config(self) -> dict[str, Any]:
        return {"message_queue": {"type": "redis"}, "event_bus": {"type": "redis_pubsub"}}

    @pytest.fixture
    def backend_client(self) -> Any:
        return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())


class TestRealRedisWorkQueue(WorkQueueContract):
    @pytest.fixture
    def backend_config(self, meetq_redis_url: str) -> dict[str, Any]:
        return {
            "redis": {"url": meetq_redis_url},
            "message_queue": {"type": "redis"},
            "event_bus": {"type": "redis_pubsub"},
        }
