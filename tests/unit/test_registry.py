"""The backend registry and the plugin hook that fills it.

Each test builds its own plugin manager, so no installed plugin can change the outcome.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest

import meetq
from meetq import (
    BackendContext,
    BackendNotFoundError,
    BackendRegistry,
    BackendSpec,
    MeetqConfig,
    MissingDependencyError,
    PluginError,
    Requirement,
    build_registry,
    make_plugin_manager,
)
from meetq.backends.memory._backend import MemoryBackend
from meetq.core.protocols import Backend
from meetq.plugins import hookimpl


def _never(context: BackendContext) -> Backend:
    raise AssertionError("the factory must not be called")


class RegistersSpecs:
    """A plugin object that registers the given specs."""

    def __init__(self, *specs: BackendSpec) -> None:
        self.specs = specs

    @hookimpl
    def meetq_register_backends(self, registry: BackendRegistry) -> None:
        for spec in self.specs:
            registry.register(spec)


def fresh_registry(**plugins: Any) -> BackendRegistry:
    pm = make_plugin_manager(entry_points=False)
    for name, plugin in plugins.items():
        pm.register(plugin, name=name)
    return build_registry(pm)


def test_builtin_backends_and_owners() -> None:
    registry = fresh_registry()
    assert registry.names() == ["memory", "redis", "redis_pubsub"]
    assert registry.owner("memory") == "meetq.backends.memory"
    assert registry.owner("redis_pubsub") == "meetq.backends.redis"
    assert registry.get("redis_pubsub") is registry.get("redis")


def test_duplicate_name_is_rejected_naming_both_plugins() -> None:
    thief = RegistersSpecs(BackendSpec(name="memory", factory=_never))
    with pytest.raises(PluginError) as info:
        fresh_registry(thief_plugin=thief)
    message = str(info.value)
    assert "'memory'" in message
    # The newcomer is the one blamed; the built-in keeps its name.
    assert "from plugin 'thief_plugin'" in message
    assert "already registered by plugin 'meetq.backends.memory'" in message


def test_alias_clashing_with_a_name_is_rejected() -> None:
    clash = RegistersSpecs(BackendSpec(name="mine", aliases=("redis",), factory=_never))
    with pytest.raises(PluginError, match=r"'redis'.*'clasher'.*'meetq\.backends\.redis'"):
        fresh_registry(clasher=clash)


def test_name_clashing_with_an_alias_is_rejected() -> None:
    clash = RegistersSpecs(BackendSpec(name="redis_pubsub", factory=_never))
    with pytest.raises(PluginError, match=r"'redis_pubsub'.*'clasher'.*'meetq\.backends\.redis'"):
        fresh_registry(clasher=clash)


def test_rejected_spec_leaves_no_partial_registration() -> None:
    registry = BackendRegistry()
    registry.register(BackendSpec(name="a", factory=_never))
    with pytest.raises(PluginError):
        registry.register(BackendSpec(name="b", aliases=("a",), factory=_never))
    # "b" came with a taken alias, so none of its names were kept.
    assert registry.names() == ["a"]


def test_registering_something_else_than_a_spec_is_a_plugin_error() -> None:
    class Sloppy:
        @hookimpl
        def meetq_register_backends(self, registry: BackendRegistry) -> None:
            registry.register({"name": "dict"})  # type: ignore[arg-type]

    with pytest.raises(PluginError, match=r"'sloppy'.*not a BackendSpec"):
        fresh_registry(sloppy=Sloppy())


def test_bad_backend_name_is_rejected_by_the_spec() -> None:
    with pytest.raises(ValueError, match="name"):
        BackendSpec(name="Has Spaces", factory=_never)


def test_unknown_name_raises_backend_not_found_with_suggestion() -> None:
    registry = fresh_registry()
    with pytest.raises(BackendNotFoundError) as info:
        registry.get("memroy")
    assert info.value.backend == "memroy"
    assert info.value.available == ["memory", "redis", "redis_pubsub"]
    assert "Did you mean 'memory'?" in str(info.value)
    with pytest.raises(BackendNotFoundError) as info:
        registry.get("kafka")
    assert "Did you mean" not in str(info.value)
    assert "'memory', 'redis', 'redis_pubsub'" in str(info.value)


def test_missing_requirement_raises_with_install_command() -> None:
    spec = BackendSpec(
        name="needs_driver",
        factory=_never,
        requires=(Requirement(module="meetq_no_such_driver", install="pip install x"),),
    )
    registry = fresh_registry(driverless=RegistersSpecs(spec))
    context = BackendContext(config=MeetqConfig())
    with pytest.raises(MissingDependencyError) as info:
        registry.create("needs_driver", context)
    error = info.value
    assert (error.backend, error.package, error.install) == (
        "needs_driver", "meetq_no_such_driver", "pip install x",
    )
    assert "install it with: pip install x" in str(error)


async def test_missing_requirement_surfaces_from_initialize_queue_system() -> None:
    spec = BackendSpec(
        name="needs_driver",
        factory=_never,
        requires=(Requirement(module="meetq_no_such_driver", install="pip install x"),),
    )
    registry = fresh_registry(driverless=RegistersSpecs(spec))
    with pytest.raises(MissingDependencyError, match="pip install x"):
        await meetq.initialize_queue_system(
            {"message_queue": {"type": "needs_driver"}, "event_bus": {"enabled": False}},
            registry=registry,
        )


def test_create_passes_config_and_client_to_the_factory() -> None:
    seen: list[BackendContext] = []

    def factory(context: BackendContext) -> Backend:
        seen.append(context)
        return MemoryBackend()

    registry = fresh_registry(p=RegistersSpecs(BackendSpec(name="probe", factory=factory)))
    context = BackendContext(config=MeetqConfig(), client=object())
    backend = registry.create("probe", context)
    assert isinstance(backend, Backend)
    assert seen == [context]


def test_registering_the_redis_plugin_does_not_import_redis() -> None:
    # A fresh interpreter: this test process has imported redis long ago.
    script = textwrap.dedent(
        """
        import sys
        import meetq
        registry = meetq.build_registry(meetq.make_plugin_manager())
        assert "redis" in registry.names(), registry.names()
        leaked = sorted(m for m in sys.modules if m == "redis" or m.startswith("redis."))
        assert not leaked, leaked
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
