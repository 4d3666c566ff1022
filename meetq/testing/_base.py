"""The base every contract mixin builds on: how a test gets its backend.

A backend binds the suite by subclassing ``ContractSuite`` (or single mixins) and
overriding the ``backend_config`` fixture; ``backend_client`` may be overridden to pass
a client (as ``initialize_queue_system(redis=...)`` would). Backends are built the way a
user's config builds them: a fresh plugin manager, the registry, ``type:``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import pytest_asyncio

from meetq.core.config import MeetqConfig, load_config
from meetq.core.protocols import Backend
from meetq.core.registry import BackendContext
from meetq.manager import build_registry, make_plugin_manager

__all__ = ["BackendContract"]


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for section, values in extra.items():
        merged.setdefault(section, {})
        for key, value in values.items():
            merged[section].setdefault(key, value)
    return merged


class BackendContract:
    """Fixtures shared by every contract mixin. Override ``backend_config``."""

    @pytest.fixture
    def backend_config(self) -> Mapping[str, Any]:
        """The config sections that select the backend under test (must be overridden)."""
        raise NotImplementedError(
            "a class binding the meetq contract suite must override the backend_config fixture"
        )

    @pytest.fixture
    def backend_client(self) -> Any:
        """A client handed to the backend factory (``redis=`` in the public API)."""
        return None

    @pytest.fixture
    def meetq_config(self, backend_config: Mapping[str, Any], meetq_namespace: str) -> MeetqConfig:
        return load_config(
            _merge(
                backend_config,
                {
                    "redis": {"key_prefix": meetq_namespace},
                    # Each test its own broker, as each has its own key prefix on Redis.
                    "memory": {"broker": "isolated"},
                    "message_queue": {"queue_name": "q"},
                    "event_bus": {"namespace": meetq_namespace},
                },
            )
        )

    @pytest.fixture
    def capabilities(self, backend: Backend) -> frozenset[str]:
        return backend.capabilities

    @pytest_asyncio.fixture
    async def backend(
        self, meetq_config: MeetqConfig, backend_client: Any, request: pytest.FixtureRequest
    ) -> AsyncIterator[Backend]:
        registry = build_registry(make_plugin_manager())
        built = registry.create(
            meetq_config.message_queue.type,
            BackendContext(config=meetq_config, client=backend_client),
        )
        for marker in request.node.iter_markers("requires"):
            missing = set(marker.args) - set(built.capabilities)
            if missing:
                await built.aclose()
                pytest.skip(f"backend does not declare capability {', '.join(sorted(missing))}")
        try:
            yield built
        finally:
            await built.aclose()

    @pytest_asyncio.fixture
    async def pubsub_backend(
        self, meetq_config: MeetqConfig, backend_client: Any, backend: Backend
    ) -> AsyncIterator[Backend]:
        """The backend ``event_bus.type`` selects (the same object when it is the same)."""
        registry = build_registry(make_plugin_manager())
        spec = registry.get(meetq_config.event_bus.type)
        if spec.name == backend.name:
            yield backend
            return
        built = registry.create(
            spec.name, BackendContext(config=meetq_config, client=backend_client)
        )
        try:
            yield built
        finally:
            await built.aclose()
