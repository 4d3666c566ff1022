"""load_config: the seed's YAML schema, its units, the environment override, and errors
that name the key, the value and what to write instead."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import meetq
from meetq import (
    BackendNotFoundError,
    BackendSpec,
    ConfigError,
    MeetqConfig,
    RedisConfig,
    build_registry,
    load_config,
    make_plugin_manager,
)
from meetq.backends.memory._backend import MemoryBackend
from meetq.core.protocols import Backend
from meetq.core.registry import BackendContext, BackendRegistry

# The "配置文件" block of the seed guide, verbatim.
SEED_CONFIG = """\
message_queue:
  enabled: true
  type: "redis"  # redis 或 memory
  queue_name: "my_service"
  workers: 4
  visibility_timeout: 30
  poll_interval: 100
  max_retries: 3
  enable_dead_letter_queue: true

task_scheduler:
  enabled: true
  buffer_size: 1000
  workers: 8
  enable_delayed_tasks: true

event_bus:
  enabled: true
  type: "redis_pubsub"
  buffer_size: 1000
  workers: 4

task_dispatcher:
  enabled: true
  enable_routing: true
  enable_callbacks: true
"""


@pytest.fixture(autouse=True)
def _no_ambient_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell may export it; these tests decide it themselves.
    monkeypatch.delenv("MEETQ_REDIS_URL", raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# -- loading ---------------------------------------------------------------------------


def test_seed_example_config_loads_from_yaml_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SEED_CONFIG))

    assert isinstance(cfg, MeetqConfig)
    mq = cfg.message_queue
    assert (mq.enabled, mq.type, mq.queue_name, mq.workers) == (True, "redis", "my_service", 4)
    assert (mq.max_retries, mq.enable_dead_letter_queue) == (3, True)
    ts = cfg.task_scheduler
    assert (ts.enabled, ts.buffer_size, ts.workers, ts.enable_delayed_tasks) == (
        True, 1000, 8, True,
    )
    eb = cfg.event_bus
    assert (eb.enabled, eb.type, eb.buffer_size, eb.workers) == (True, "redis_pubsub", 1000, 4)
    td = cfg.task_dispatcher
    assert (td.enabled, td.enable_routing, td.enable_callbacks) == (True, True, True)


def test_path_given_as_str_loads_the_same(tmp_path: Path) -> None:
    path = write(tmp_path, SEED_CONFIG)
    assert load_config(str(path)) == load_config(path)


def test_seed_units_numbers_are_seconds_and_milliseconds(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SEED_CONFIG))
    # visibility_timeout: 30 means 30 seconds; poll_interval: 100 means 100 milliseconds.
    assert cfg.message_queue.visibility_timeout == 30.0
    assert cfg.message_queue.poll_interval == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("key", "value", "seconds"),
    [
        ("visibility_timeout", "30s", 30.0),
        ("visibility_timeout", "2m", 120.0),
        ("visibility_timeout", "1h", 3600.0),
        ("visibility_timeout", "100ms", 0.1),
        ("visibility_timeout", 2.5, 2.5),
        ("poll_interval", "100ms", 0.1),
        ("poll_interval", "2s", 2.0),
        ("poll_interval", 250, 0.25),
        ("handler_timeout", 0, 0.0),
    ],
)
def test_duration_strings_carry_their_own_unit(key: str, value: Any, seconds: float) -> None:
    cfg = load_config({"message_queue": {key: value}})
    assert getattr(cfg.message_queue, key) == pytest.approx(seconds)


def test_mapping_and_none_give_defaults_for_missing_keys() -> None:
    assert load_config(None) == load_config({}) == MeetqConfig()
    cfg = load_config({"message_queue": {"workers": 9}, "event_bus": None})
    assert cfg.message_queue.workers == 9
    assert cfg.message_queue.type == "memory"
    assert cfg.event_bus == MeetqConfig().event_bus


def test_workers_default_fits_async_and_plain_handlers() -> None:
    mq = load_config({}).message_queue
    assert mq.workers is None
    # Unset: async handlers run many at once, plain ones as many as the thread pool.
    assert mq.handler_workers(any_async=True) == 100 == mq.DEFAULT_ASYNC_WORKERS
    assert mq.handler_workers(any_async=False) == 4 == mq.sync_threads()
    threads = load_config({"message_queue": {"sync_handler_threads": 6}}).message_queue
    assert (threads.handler_workers(any_async=False), threads.sync_threads()) == (6, 6)
    assert threads.handler_workers(any_async=True) == 100


def test_explicit_workers_keep_their_meaning(tmp_path: Path) -> None:
    # The guide's `workers: 4` is four, for async and plain handlers alike.
    four = load_config(write(tmp_path, "message_queue:\n  workers: 4\n")).message_queue
    assert four.handler_workers(any_async=True) == four.handler_workers(any_async=False) == 4
    assert four.sync_threads() == 4
    assert load_config({"message_queue": {"workers": None}}).message_queue.workers is None
    assert load_config(environ={"MEETQ_MESSAGE_QUEUE__WORKERS": "null"}).message_queue == (
        MeetqConfig().message_queue
    )
    with pytest.raises(ConfigError, match=r"message_queue.workers=0: must be between 1"):
        load_config({"message_queue": {"workers": 0}})


def test_empty_yaml_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == MeetqConfig()


def test_other_top_level_sections_of_a_service_config_are_ignored() -> None:
    cfg = load_config({"database": {"dsn": "x"}, "message_queue": {"workers": 2}})
    assert cfg.message_queue.workers == 2


def test_a_built_config_passes_through() -> None:
    cfg = load_config({"message_queue": {"workers": 7}})
    assert load_config(cfg) is cfg


# -- environment -----------------------------------------------------------------------


def test_meetq_redis_url_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "redis:\n  url: redis://from-file:6379/0\n")
    assert load_config(path).section(RedisConfig).url == "redis://from-file:6379/0"

    monkeypatch.setenv("MEETQ_REDIS_URL", "redis://from-env:6380/2")
    assert load_config(path).section(RedisConfig).url == "redis://from-env:6380/2"
    assert load_config({}).section(RedisConfig).url == "redis://from-env:6380/2"
    assert load_config(MeetqConfig()).section(RedisConfig).url == "redis://from-env:6380/2"


def test_empty_meetq_redis_url_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEETQ_REDIS_URL", "")
    assert load_config({"redis": {"url": "redis://h:1/0"}}).section(RedisConfig).url == "redis://h:1/0"


# -- errors ----------------------------------------------------------------------------


def test_unknown_key_names_dotted_path_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "message_queue:\n  wrokers: 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "message_queue.wrokers"
    assert info.value.value == 4
    assert "message_queue.wrokers" in str(info.value)
    assert "did you mean 'workers'?" in str(info.value)


def test_unknown_key_without_close_match_lists_known_keys() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"task_dispatcher": {"zzzz": 1}})
    assert info.value.key == "task_dispatcher.zzzz"
    assert "enable_routing" in str(info.value)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("message_queue", "workers", "four"),
        ("message_queue", "workers", 4.0),
        ("message_queue", "workers", True),
        ("message_queue", "workers", 0),
        ("message_queue", "max_retries", -1),
        ("event_bus", "buffer_size", -1),
        ("task_scheduler", "buffer_size", -1),
        ("message_queue", "visibility_timeout", "ten"),
        ("message_queue", "visibility_timeout", -5),
        ("message_queue", "visibility_timeout", float("nan")),
        ("message_queue", "poll_interval", "100 parsecs"),
        ("message_queue", "poll_interval", True),
        ("message_queue", "enabled", "yes"),
        ("message_queue", "type", ""),
        ("message_queue", "type", 5),
        ("message_queue", "retry_jitter", 1.5),
        ("event_bus", "overflow", "explode"),
        ("redis", "max_connections", 0),
    ],
)
def test_bad_value_raises_config_error_with_key_and_value(
    section: str, key: str, value: Any
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({section: {key: value}})
    assert info.value.key == f"{section}.{key}"
    if value == value:  # NaN is not equal to itself
        assert info.value.value == value
    else:
        assert info.value.value != info.value.value
    assert f"config {section}.{key}=" in str(info.value)


def test_error_message_says_what_is_expected() -> None:
    with pytest.raises(ConfigError, match=r"message_queue\.workers='four': expected an integer"):
        load_config({"message_queue": {"workers": "four"}})
    with pytest.raises(ConfigError, match=r"'30s', '100ms'"):
        load_config({"message_queue": {"visibility_timeout": "ten"}})


@pytest.mark.parametrize("raw", [[1, 2], "memory", 3])
def test_non_mapping_section_raises(raw: Any) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"message_queue": raw})
    assert info.value.key == "message_queue"
    assert "mapping" in str(info.value)


def test_non_mapping_document_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "- message_queue\n- event_bus\n"))
    assert info.value.key == "<root>"


def test_missing_file_and_broken_yaml_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_config(tmp_path / "absent.yaml")
    assert info.value.key == "<file>"
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "message_queue: [unclosed\n"))


# -- errors from initialize_queue_system -----------------------------------------------


class SpyBackends:
    """A registry whose only real backend records every time it is built."""

    def __init__(self) -> None:
        self.built: list[str] = []
        self.registry: BackendRegistry = build_registry(make_plugin_manager(entry_points=False))
        self.registry.register(BackendSpec(name="spy", factory=self._create))

    def _create(self, context: BackendContext) -> Backend:
        self.built.append("spy")
        return MemoryBackend()


async def test_unknown_type_lists_available_and_suggests() -> None:
    spy = SpyBackends()
    config = {"message_queue": {"type": "spy"}, "event_bus": {"type": "reddis"}}
    with pytest.raises(BackendNotFoundError) as info:
        await meetq.initialize_queue_system(config, registry=spy.registry)
    error = info.value
    assert error.backend == "reddis"
    assert error.key == "event_bus.type"
    assert {"memory", "redis", "redis_pubsub", "spy"} <= set(error.available)
    assert "Did you mean 'redis'?" in str(error)
    assert "config event_bus.type='reddis'" in str(error)
    # Resolved before building: the valid message_queue backend was never made.
    assert spy.built == []


async def test_unknown_type_with_default_registry() -> None:
    with pytest.raises(BackendNotFoundError, match="Did you mean 'memory'"):
        await meetq.initialize_queue_system({"message_queue": {"type": "memroy"}})


async def test_bad_config_starts_and_builds_nothing() -> None:
    spy = SpyBackends()
    before = asyncio.all_tasks()
    with pytest.raises(ConfigError):
        await meetq.initialize_queue_system(
            {"message_queue": {"type": "spy", "workers": "four"}}, registry=spy.registry
        )
    with pytest.raises(BackendNotFoundError):
        await meetq.initialize_queue_system(
            {"message_queue": {"type": "spy"}, "event_bus": {"type": "nope"}},
            registry=spy.registry,
        )
    assert spy.built == []
    assert asyncio.all_tasks() == before


async def test_disabled_section_type_is_not_resolved() -> None:
    spy = SpyBackends()
    qm = await meetq.initialize_queue_system(
        {
            "message_queue": {"type": "spy"},
            "event_bus": {"enabled": False, "type": "not_installed_anywhere"},
        },
        registry=spy.registry,
    )
    async with qm:
        assert qm.get_message_queue() is not None
    assert spy.built == ["spy"]


def test_config_classes_built_directly_are_validated_too() -> None:
    # The house rule: a bad value is rejected where it enters, also without load_config.
    with pytest.raises(ConfigError) as info:
        meetq.MessageQueueConfig(workers=0)
    assert info.value.key == "message_queue.workers" and info.value.value == 0
    with pytest.raises(ConfigError) as info:
        meetq.EventBusConfig(overflow="explode")
    assert info.value.key == "event_bus.overflow"
    with pytest.raises(ConfigError) as info:
        meetq.RedisConfig(socket_timeout=-1.0)
    assert info.value.key == "redis.socket_timeout"
    assert meetq.MessageQueueConfig(poll_interval=0.25).poll_interval == 0.25


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"task_dispatcher": {"service_name": "billing@eu"}}, "task_dispatcher.service_name"),
        ({"task_dispatcher": {"service_name": "s" * 101}}, "task_dispatcher.service_name"),
        ({"event_bus": {"reconnect_backoff_base": 0}}, "event_bus.reconnect_backoff_base"),
    ],
)
def test_values_that_would_fail_later_are_refused_at_load(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        meetq.load_config(raw)
    assert info.value.key == key
