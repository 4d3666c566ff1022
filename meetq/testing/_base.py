"""The base every contract mixin builds on: how a test gets its backend.

A backend binds the suite by subclassing ``ContractSuite`` (or single mixins) and
overriding the ``backend_config`` fixture; ``backend_client`` may be overridden to pass
a client (as ``initialize_queue_system(redis=...)`` would). Backends are built the way a
user's config builds them: a fresh plugin manager, the registry, ``type:``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
import pytest_asyncio

from meetq.core.config import MeetqConfig, load_config
from meetq.core.protocols import Backend
from meetq.core.registry import BackendContext, BackendSpec
from meetq.manager import build_registry, make_plugin_manager
from meetq.testing._marks import missing_capabilities

__all__ = ["BackendContract"]


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for section, values in extra.items():
        merged.setdefault(section, {})
        for key, value in values.items():
            merged[section].setdefault(key, value)
    return merged


def _mark_async_tests(cls: type) -> None:
    # The suite must run where pytest-asyncio is in strict mode (a third party's project
    # need not use auto mode), so every coroutine test carries its own asyncio mark. A
    # class-level mark would also land on the plain tests, which pytest-asyncio warns about.
    for name, value in vars(cls).items():
        marks = getattr(value, "pytestmark", ())
        if (
            name.startswith("test")
            and inspect.iscoroutinefunction(value)
            and not any(mark.name == "asyncio" for mark in marks)
        ):
            pytest.mark.asyncio(value)


class BackendContract:
    """Fixtures shared by every contract mixin. Override ``backend_config``.

    Every ``async def test_*`` of a subclass — the suite's and the binding class's own —
    gets ``@pytest.mark.asyncio`` when the class is made, so the suite runs in
    pytest-asyncio's strict mode as well as in auto mode.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _mark_async_tests(cls)

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
    def contract_queue_name(self) -> str:
        """The queue the suite's tests work on, ``"q"``. A binding may give each test its
        own: a Redis Cluster binding spreads the tests over its primaries this way (one
        queue lives in one slot)."""
        return "q"

    @pytest.fixture
    def meetq_config(
        self, backend_config: Mapping[str, Any], meetq_namespace: str, contract_queue_name: str
    ) -> MeetqConfig:
        return load_config(
            _merge(
                backend_config,
                {
                    "redis": {"key_prefix": meetq_namespace},
                    # Each test its own broker, as each has its own key prefix on Redis.
                    "memory": {"broker": "isolated"},
                    "message_queue": {"queue_name": contract_queue_name},
                    "event_bus": {"namespace": meetq_namespace},
                },
            )
        )

    @pytest.fixture
    def backend_spec(self, meetq_config: MeetqConfig) -> BackendSpec:
        """The registry's spec for ``message_queue.type``: where capabilities are declared."""
        return build_registry(make_plugin_manager()).get(meetq_config.message_queue.type)

    @pytest.fixture
    def capabilities(self, backend_spec: BackendSpec) -> frozenset[str]:
        """What the backend under test declares beyond the contract (``CAP_*`` names)."""
        return backend_spec.capabilities

    @pytest.fixture(autouse=True)
    def _meetq_requires_gate(
        self, request: pytest.FixtureRequest, backend_spec: BackendSpec
    ) -> None:
        # Autouse, so a test marked `requires(...)` is skipped before any backend is built,
        # whichever fixtures it uses.
        missing = missing_capabilities(request.node, backend_spec.capabilities)
        if missing:
            pytest.skip(
                f"backend {backend_spec.name!r} does not declare capability "
                f"{', '.join(map(repr, missing))} (meetq.testing.requires)"
            )

    @pytest_asyncio.fixture
    async def backend(
        self, meetq_config: MeetqConfig, backend_client: Any
    ) -> AsyncIterator[Backend]:
        registry = build_registry(make_plugin_manager())
        built = registry.create(
            meetq_config.message_queue.type,
            BackendContext(config=meetq_config, client=backend_client),
        )
        try:
            yield built
        finally:
            await built.aclose()

    @pytest_asyncio.fixture
    async def make_backend(
        self, meetq_config: MeetqConfig, backend_client: Any
    ) -> AsyncIterator[Callable[..., Backend]]:
        """``make(type_name=None)``: another backend built from the same config and client
        (``message_queue.type`` unless named) — a second connection, as a second process
        would open. Every one is closed after the test."""
        registry = build_registry(make_plugin_manager())
        made: list[Backend] = []

        def make(type_name: str | None = None) -> Backend:
            built = registry.create(
                type_name or meetq_config.message_queue.type,
                BackendContext(config=meetq_config, client=backend_client),
            )
            made.append(built)
            return built

        try:
            yield make
        finally:
            for built in made:
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
