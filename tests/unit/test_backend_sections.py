"""Backends own their config sections: a ``BackendSpec`` names its section class,
``load_config`` validates that section with the registry's classes (the same messages
and environment overrides as the components' sections), and top-level sections nobody
owns are kept as given."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import attrs
import fakeredis
import pytest

import meetq
from meetq import (
    BackendContext,
    BackendRegistry,
    BackendSpec,
    ConfigError,
    MeetqConfig,
    MemoryConfig,
    PluginError,
    RedisConfig,
    build_registry,
    load_config,
    make_plugin_manager,
)
from meetq.backend import Backend, choice_field, duration_field, int_field, str_field
from meetq.backends.memory._backend import MemoryBackend
from meetq.core import config as kernel_config


@pytest.fixture(autouse=True)
def _no_ambient_meetq_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MEETQ_"):
            monkeypatch.delenv(name)


@attrs.frozen(kw_only=True)
class WarehouseConfig:
    """A third-party backend's own section."""

    SECTION: ClassVar[str] = "warehouse"

    dsn: str = str_field("wh://localhost")
    pool: int = int_field(4, 1, 64)
    lag: float = duration_field(0.5, 1.0)
    mode: str = choice_field("fast", ("fast", "safe"))


class Warehouse(MemoryBackend):
    """Stores in memory; remembers the section it was built with."""

    built_with: ClassVar[list[WarehouseConfig]] = []

    def __init__(self, config: WarehouseConfig) -> None:
        super().__init__()
        Warehouse.built_with.append(config)


def _create(context: BackendContext) -> Backend:
    return Warehouse(context.config.section(WarehouseConfig))


def _registry(*specs: BackendSpec) -> BackendRegistry:
    registry = build_registry(make_plugin_manager(entry_points=False))
    for spec in specs:
        registry.register(spec)
    return registry


WAREHOUSE = BackendSpec(name="warehouse", factory=_create, config=WarehouseConfig)


def test_the_builtin_backends_declare_their_sections() -> None:
    assert _registry().config_sections() == {"memory": MemoryConfig, "redis": RedisConfig}
    assert set(_registry(WAREHOUSE).config_sections()) == {"memory", "redis", "warehouse"}


def test_a_backend_section_is_validated_by_the_registry_given() -> None:
    raw = {"warehouse": {"dsn": "wh://db:9", "pool": 8, "lag": "2s"}}
    config = load_config(raw, registry=_registry(WAREHOUSE), environ={})
    section = config.section(WarehouseConfig)
    assert (section.dsn, section.pool, section.lag, section.mode) == ("wh://db:9", 8, 2.0, "fast")
    assert config.backends["warehouse"] is section
    with pytest.raises(ConfigError) as info:
        load_config({"warehouse": {"pol": 8}}, registry=_registry(WAREHOUSE), environ={})
    assert str(info.value) == "config warehouse.pol=8: unknown key; did you mean 'pool'?"
    with pytest.raises(ConfigError) as info:
        load_config({"warehouse": {"pool": 0}}, registry=_registry(WAREHOUSE), environ={})
    assert str(info.value) == "config warehouse.pool=0: must be between 1 and 64"
    with pytest.raises(ConfigError) as info:
        load_config({"warehouse": [1]}, registry=_registry(WAREHOUSE), environ={})
    assert info.value.key == "warehouse"


def test_a_backend_section_takes_environment_overrides() -> None:
    registry = _registry(WAREHOUSE)
    env = {"MEETQ_WAREHOUSE__POOL": "16", "MEETQ_WAREHOUSE__MODE": "safe"}
    config = load_config({"warehouse": {"pool": 2}}, registry=registry, environ=env)
    assert (config.section(WarehouseConfig).pool, config.section(WarehouseConfig).mode) == (
        16,
        "safe",
    )
    # Also onto a built config, and with no section in the file at all.
    built = load_config(MeetqConfig(), registry=registry, environ={"MEETQ_WAREHOUSE__LAG": "3"})
    assert built.section(WarehouseConfig).lag == 3.0
    with pytest.raises(ConfigError) as info:
        load_config(registry=registry, environ={"MEETQ_WAREHOUSE__POLL": "1"})
    assert str(info.value) == (
        "config MEETQ_WAREHOUSE__POLL='1': unknown key warehouse.poll; "
        "did you mean MEETQ_WAREHOUSE__POOL?"
    )
    with pytest.raises(ConfigError) as info:
        load_config(registry=registry, environ={"MEETQ_WAREHOUSE__POOL": "99"})
    assert str(info.value).endswith("must be between 1 and 64 (it sets warehouse.pool)")


def test_a_section_without_a_backend_is_left_alone(tmp_path: Path) -> None:
    # A service keeps its own sections in the same file as meetq's.
    path = tmp_path / "service.yaml"
    path.write_text(
        "database:\n  dsn: postgres://db/app\n  pool: [1, 2]\n"
        "logging: debug\n"
        "message_queue:\n  workers: 2\n",
        encoding="utf-8",
    )
    config = load_config(path, environ={})
    assert config.message_queue.workers == 2
    assert config.others["database"] == {"dsn": "postgres://db/app", "pool": [1, 2]}
    assert config.others["logging"] == "debug"
    assert "database" not in config.backends


async def test_the_manager_builds_a_backend_from_its_section() -> None:
    Warehouse.built_with.clear()
    qm = await meetq.initialize_queue_system(
        {"message_queue": {"type": "warehouse"}, "warehouse": {"pool": 3}, "database": {}},
        registry=_registry(WAREHOUSE),
    )
    async with qm:
        assert qm.get_message_queue() is not None
    assert [c.pool for c in Warehouse.built_with] == [3]
    with pytest.raises(ConfigError, match=r"^config warehouse\.pool='x': expected an integer$"):
        await meetq.initialize_queue_system(
            {"message_queue": {"type": "warehouse"}, "warehouse": {"pool": "x"}},
            registry=_registry(WAREHOUSE),
        )


async def test_a_config_loaded_before_the_plugin_is_checked_when_it_is_built() -> None:
    # Loaded with the default registry, which has no warehouse: the section is kept raw.
    config = load_config({"message_queue": {"type": "warehouse"}, "warehouse": {"pool": 65}})
    assert config.others["warehouse"] == {"pool": 65}
    with pytest.raises(ConfigError) as info:
        await meetq.initialize_queue_system(config, registry=_registry(WAREHOUSE))
    assert info.value.key == "warehouse.pool"


async def test_initialize_queue_system_with_a_client_still_works() -> None:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    qm = await meetq.initialize_queue_system(
        {"message_queue": {"type": "redis"}, "redis": {"key_prefix": "sections"}},
        redis=client,
    )
    async with qm:
        mq = qm.get_message_queue()
        assert mq is not None
        await mq.publish(meetq.Message(type="t", payload={}))
    assert await client.keys("sections:*")
    await client.aclose()


def test_the_kernel_without_a_default_registry_keeps_backend_sections_raw() -> None:
    # The kernel alone knows no backend: it checks the components' sections, keeps the
    # rest, and a backend reading its section still gets it checked then.
    kernel_config.use_default_registry(None)
    try:
        config = load_config({"redis": {"max_connections": 0}}, environ={})
        assert config.others["redis"] == {"max_connections": 0}
        with pytest.raises(ConfigError) as info:
            config.section(RedisConfig)
        assert info.value.key == "redis.max_connections"
    finally:
        kernel_config.use_default_registry(build_registry)
    with pytest.raises(ConfigError):
        load_config({"redis": {"max_connections": 0}}, environ={})


def test_an_absent_section_gives_the_defaults() -> None:
    assert load_config(environ={}).section(RedisConfig) == RedisConfig()
    assert MeetqConfig().section(MemoryConfig) == MemoryConfig()


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (dict, "must be an attrs class"),
        (attrs.make_class("NoName", {"x": str_field("a")}), "SECTION must be"),
        (
            type("Mq", (attrs.make_class("Mq0", {"x": str_field("a")}),), {"SECTION": "event_bus"}),
            "is a component's section",
        ),
    ],
)
def test_a_bad_section_class_is_refused_when_the_spec_is_made(config: Any, problem: str) -> None:
    with pytest.raises(PluginError, match=problem):
        BackendSpec(name="bad", factory=_create, config=config)


def test_a_plain_attrs_field_is_refused() -> None:
    @attrs.frozen
    class Plain:
        SECTION: ClassVar[str] = "plain"
        x: int = 1

    with pytest.raises(PluginError, match=r"plain\.x.*field helpers"):
        BackendSpec(name="plain", factory=_create, config=Plain)


def test_two_backends_cannot_claim_one_section() -> None:
    @attrs.frozen(kw_only=True)
    class Other:
        SECTION: ClassVar[str] = "warehouse"
        dsn: str = str_field("x")

    registry = _registry(WAREHOUSE)
    with pytest.raises(PluginError, match=r"section 'warehouse' of backend 'rival'"):
        registry.register(BackendSpec(name="rival", factory=_create, config=Other))
    assert "rival" not in registry.names()
    # The same class under another backend name shares the section.
    registry.register(BackendSpec(name="warehouse2", factory=_create, config=WarehouseConfig))
    assert registry.config_sections()["warehouse"] is WarehouseConfig


def test_components_built_from_a_config_check_the_registrys_sections() -> None:
    raw = {"message_queue": {"type": "warehouse"}, "warehouse": {"mode": "slow"}}
    with pytest.raises(ConfigError, match=r"^config warehouse\.mode='slow': expected one of"):
        meetq.message_queue_from(raw, registry=_registry(WAREHOUSE))
    with pytest.raises(ConfigError, match=r"^config warehouse\.mode='slow'"):
        meetq.pubsub_from(
            {**raw, "event_bus": {"type": "warehouse"}}, registry=_registry(WAREHOUSE)
        )


def test_a_config_with_sections_stays_hashable() -> None:
    config = load_config({"redis": {"key_prefix": "h"}, "database": {"dsn": "x"}}, environ={})
    assert hash(config) == hash(load_config({"redis": {"key_prefix": "h"}}, environ={}))
    assert config != load_config({"redis": {"key_prefix": "other"}}, environ={})
