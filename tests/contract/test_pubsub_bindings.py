"""Binds the PubSub and LocalEventBus contract suites to memory, fakeredis and real Redis.

Kept separate from the work-queue bindings until one shared binding file holds them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fakeredis
import pytest

from meetq.testing.event_bus_suite import EventBusContract
from meetq.testing.pubsub_suite import PubSubContract


class TestMemoryPubSub(PubSubContract, EventBusContract):
    @pytest.fixture
    def backend_config(self) -> Mapping[str, Any]:
        return {"message_queue": {"type": "memory"}, "event_bus": {"type": "memory"}}


class TestFakeRedisPubSub(PubSubContract, EventBusContract):
    @pytest.fixture
    def backend_config(self) -> Mapping[str, Any]:
        return {"message_queue": {"type": "redis"}, "event_bus": {"type": "redis_pubsub"}}

    @pytest.fixture
    def backend_client(self) -> Any:
        return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())


class TestRedisPubSub(PubSubContract, EventBusContract):
    @pytest.fixture
    def backend_config(self, meetq_redis_url: str) -> Mapping[str, Any]:
        return {
            "redis": {"url": meetq_redis_url},
            "message_queue": {"type": "redis"},
            "event_bus": {"type": "redis_pubsub"},
        }
