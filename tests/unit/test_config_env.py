"""``MEETQ_<SECTION>__<KEY>`` environment overrides: every key, read as the YAML would be,
checked like the YAML, and refused naming the variable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import pytest

import meetq
from meetq import ConfigError, MeetqConfig, MessageQueue, RedisConfig, load_config
from meetq.backends.memory._backend import MemoryBackend
from meetq.core._limits import RateLimit

FILE = """\
message_queue:
  type: memory
  queue_name: shared
  workers: 4
  poll_interval: 100
task_dispatcher:
  service_name: gateway
"""


@pytest.fixture(autouse=True)
def _no_ambient_meetq_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell may export some; these tests decide them themselves.
    for name in list(os.environ):
        if name.startswith("MEETQ_"):
            monkeypatch.delenv(name)


def _sections() -> dict[str, type[Any]]:
    """Every section: the components' and the built-in backends' own."""
    defaults = MeetqConfig()
    components = {
        f.name: type(getattr(defaults, f.name))
        for f in attrs.fields(MeetqConfig)
        if attrs.has(type(getattr(defaults, f.name)))
    }
    registry = meetq.build_registry(meetq.make_plugin_manager(entry_points=False))
    return {**components, **registry.config_sections()}


def _section(config: MeetqConfig, name: str) -> Any:
    cls = _sections()[name]
    return getattr(config, name) if hasattr(config, name) else config.section(cls)


def _a_valid_other_value(field: attrs.Attribute[Any]) -> tuple[str, Any]:
    """Text for the variable and the value it must give, different from the default."""
    meta, default = field.metadata, field.default
    kind = meta["kind"]
    if kind == "int":
        value = meta["min"] + 1 if meta["min"] + 1 != default else meta["min"] + 2
        return str(value), value
    if kind == "float":
        value = (meta["min"] + meta["max"]) / 2
        value = value if value != default else meta["max"]
        return repr(value), value
    if kind == "bool":
        return ("false", False) if default else ("true", True)
    if kind == "duration":
        return "7s", 7.0
    if kind == "choice":
        choice = next(c for c in meta["choices"] if c != default)
        return choice, choice
    if kind == "rate_limits":
        return "{mail: 10/s burst 2}", {"mail": RateLimit(count=10, period=1.0, burst=2)}
    if kind == "concurrency_limits":
        return "{render: 3}", {"render": 3}
    if kind == "custom":  # message_queue.schedules: a YAML flow list
        text = "[{name: env, every: 30s, type: tick}]"
        return text, meta["convert"]("x", [{"name": "env", "every": "30s", "type": "tick"}])
    if kind == "str_list":
        return "h1:7000,h2:7001", ("h1:7000", "h2:7001")
    if field.name == "url":
        return "redis://env-host:6390/1", "redis://env-host:6390/1"
    if field.name.endswith("_env"):  # names an environment variable
        return "FROM_ENV", "FROM_ENV"
    return "from-env", "from-env"


# Keys that only mean something beside others (RedisConfig's checks across keys): the
# variables that make the key's setting valid.
_SENTINEL_MODE = {
    "MEETQ_REDIS__MODE": "sentinel",
    "MEETQ_REDIS__SENTINELS": "h:26379",
    "MEETQ_REDIS__SENTINEL_SERVICE": "main",
}
_COMPANIONS: dict[str, dict[str, str]] = {
    "redis.startup_nodes": {"MEETQ_REDIS__MODE": "cluster"},
    "redis.sentinels": _SENTINEL_MODE,
    "redis.sentinel_service": _SENTINEL_MODE,
    "redis.sentinel_username": _SENTINEL_MODE,
    "redis.sentinel_password": _SENTINEL_MODE,
    "redis.sentinel_password_file": _SENTINEL_MODE,
    "redis.sentinel_password_env": _SENTINEL_MODE,
    "redis.ssl_ca_certs": {"MEETQ_REDIS__SSL": "true"},
    "redis.ssl_certfile": {"MEETQ_REDIS__SSL": "true"},
    "redis.ssl_keyfile": {"MEETQ_REDIS__SSL": "true", "MEETQ_REDIS__SSL_CERTFILE": "c.pem"},
}


def _every_key() -> list[tuple[str, str, attrs.Attribute[Any]]]:
    return [
        (section, field.name, field)
        for section, cls in _sections().items()
        for field in attrs.fields(cls)
    ]


@pytest.mark.parametrize(
    ("section", "key", "field"), _every_key(), ids=[f"{s}.{k}" for s, k, _ in _every_key()]
)
def test_every_key_can_be_set_from_the_environment(
    section: str, key: str, field: attrs.Attribute[Any]
) -> None:
    text, expected = _a_valid_other_value(field)
    variable = f"MEETQ_{section.upper()}__{key.upper()}"
    companions = _COMPANIONS.get(f"{section}.{key}", {})
    config = load_config({}, environ={**companions, variable: text})
    assert getattr(_section(config, section), key) == expected
    assert getattr(_section(config, section), key) != field.default


def test_overrides_beat_the_file_and_leave_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(FILE, encoding="utf-8")
    env = {
        "MEETQ_TASK_DISPATCHER__SERVICE_NAME": "ai-worker",
        "MEETQ_MESSAGE_QUEUE__WORKERS": "8",
    }
    config = load_config(path, environ=env)
    assert config.task_dispatcher.service_name == "ai-worker"
    assert config.message_queue.workers == 8
    assert config.message_queue.queue_name == "shared"
    assert config.message_queue.poll_interval == 0.1
    assert load_config(path, environ={}).message_queue.workers == 4


@pytest.mark.parametrize(
    ("variable", "text", "attribute", "expected"),
    [
        ("MEETQ_MESSAGE_QUEUE__VISIBILITY_TIMEOUT", "30s", "visibility_timeout", 30.0),
        ("MEETQ_MESSAGE_QUEUE__VISIBILITY_TIMEOUT", "45", "visibility_timeout", 45.0),
        ("MEETQ_MESSAGE_QUEUE__POLL_INTERVAL", "250", "poll_interval", 0.25),  # ms, as in YAML
        ("MEETQ_MESSAGE_QUEUE__POLL_INTERVAL", "2s", "poll_interval", 2.0),
        (
            "MEETQ_MESSAGE_QUEUE__ENABLE_DEAD_LETTER_QUEUE",
            "false",
            "enable_dead_letter_queue",
            False,
        ),
        ("MEETQ_MESSAGE_QUEUE__RETRY_JITTER", "0.5", "retry_jitter", 0.5),
        ("MEETQ_MESSAGE_QUEUE__QUEUE_NAME", "007", "queue_name", "007"),  # strings verbatim
        ("MEETQ_MESSAGE_QUEUE__QUEUE_NAME", "true", "queue_name", "true"),
        ("MEETQ_message_queue__workers", "16", "workers", 16),  # any case after MEETQ_
    ],
)
def test_values_are_read_as_the_yaml_would_read_them(
    variable: str, text: str, attribute: str, expected: Any
) -> None:
    value = getattr(load_config(environ={variable: text}).message_queue, attribute)
    assert (type(value), value) == (type(expected), expected)


def test_an_unknown_section_names_the_variable_and_the_right_one() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={"MEETQ_MESSAGE_QEUE__WORKERS": "8"})
    assert info.value.key == "MEETQ_MESSAGE_QEUE__WORKERS"
    assert str(info.value) == (
        "config MEETQ_MESSAGE_QEUE__WORKERS='8': unknown section 'message_qeue'; "
        "did you mean MEETQ_MESSAGE_QUEUE__WORKERS?"
    )
    # The components' sections, then the backends' (from the default registry).
    with pytest.raises(
        ConfigError, match=r"known sections: message_queue, .*, task_dispatcher, memory, redis$"
    ):
        load_config(environ={"MEETQ_ZZZ__WORKERS": "8"})


def test_an_unknown_key_names_the_variable_and_the_right_one() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={"MEETQ_MESSAGE_QUEUE__WROKERS": "8"})
    assert info.value.key == "MEETQ_MESSAGE_QUEUE__WROKERS"
    assert str(info.value) == (
        "config MEETQ_MESSAGE_QUEUE__WROKERS='8': unknown key message_queue.wrokers; "
        "did you mean MEETQ_MESSAGE_QUEUE__WORKERS?"
    )
    with pytest.raises(ConfigError, match=r"unknown key redis\.; known keys: .*key_prefix"):
        load_config(environ={"MEETQ_REDIS__": "x"})


@pytest.mark.parametrize(
    ("variable", "text", "problem"),
    [
        ("MEETQ_MESSAGE_QUEUE__WORKERS", "four", "expected an integer"),
        ("MEETQ_MESSAGE_QUEUE__WORKERS", "0", "must be between 1 and 10000"),
        ("MEETQ_MESSAGE_QUEUE__WORKERS", "true", "expected an integer"),
        ("MEETQ_MESSAGE_QUEUE__ENABLED", "maybe", "expected true or false"),
        ("MEETQ_EVENT_BUS__OVERFLOW", "explode", "expected one of raise, drop, wait"),
        ("MEETQ_TASK_DISPATCHER__SERVICE_NAME", "a@b", "must not contain '@'"),
        ("MEETQ_EVENT_BUS__RECONNECT_BACKOFF_BASE", "0", "must be at least 1 ms"),
    ],
)
def test_a_bad_value_is_refused_as_in_yaml_naming_the_variable(
    variable: str, text: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={variable: text})
    section_key = variable[len("MEETQ_") :].lower().replace("__", ".")
    assert (info.value.key, info.value.value) == (variable, text)
    assert str(info.value) == f"config {variable}={text!r}: {problem} (it sets {section_key})"


def test_a_duration_that_is_no_duration_is_refused() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^config MEETQ_MESSAGE_QUEUE__VISIBILITY_TIMEOUT='ten': "
        r"expected a duration .* \(it sets message_queue\.visibility_timeout\)$",
    ):
        load_config(environ={"MEETQ_MESSAGE_QUEUE__VISIBILITY_TIMEOUT": "ten"})


@pytest.mark.parametrize("text", ["[1, 2]", "{a: 1}", "a: b: c"])
def test_a_value_that_is_not_one_yaml_scalar_is_refused(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={"MEETQ_MESSAGE_QUEUE__WORKERS": text})
    assert info.value.key == "MEETQ_MESSAGE_QUEUE__WORKERS"
    assert "expected one value" in str(info.value) or "not a YAML value" in str(info.value)


def test_empty_and_non_override_variables_are_ignored() -> None:
    env = {
        "MEETQ_MESSAGE_QUEUE__WORKERS": "",
        "MEETQ_TEST_REDIS_URL": "redis://127.0.0.1:1/0",
        "OTHER_MESSAGE_QUEUE__WORKERS": "9",
        "MEETQ_SOMETHING": "x",
    }
    assert load_config({"message_queue": {"workers": 3}}, environ=env).message_queue.workers == 3


def test_overrides_apply_to_a_built_config_too() -> None:
    built = MeetqConfig()
    config = load_config(
        built,
        environ={"MEETQ_MESSAGE_QUEUE__POLL_INTERVAL": "250", "MEETQ_REDIS__KEY_PREFIX": "svc"},
    )
    assert config.message_queue.poll_interval == 0.25  # converted in the key's unit
    assert config.section(RedisConfig).key_prefix == "svc"
    assert load_config(built, environ={}) is built


def test_meetq_redis_url_keeps_working_and_agrees_with_the_long_form() -> None:
    url = "redis://from-env:6380/2"
    assert load_config(environ={"MEETQ_REDIS_URL": url}).section(RedisConfig).url == url
    assert load_config(environ={"MEETQ_REDIS__URL": url}).section(RedisConfig).url == url
    both = {"MEETQ_REDIS_URL": url, "MEETQ_REDIS__URL": url}
    assert load_config(environ=both).section(RedisConfig).url == url
    with pytest.raises(ConfigError) as info:
        load_config(environ={**both, "MEETQ_REDIS__URL": "redis://other:1/0"})
    assert info.value.key == "MEETQ_REDIS_URL"
    assert "conflicts with MEETQ_REDIS__URL='redis://other:1/0'; set one" in str(info.value)


def test_a_section_that_is_not_a_mapping_is_still_named() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"message_queue": [1, 2]}, environ={"MEETQ_MESSAGE_QUEUE__WORKERS": "8"})
    assert info.value.key == "message_queue"


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEETQ_MESSAGE_QUEUE__WORKERS", "8")
    assert load_config().message_queue.workers == 8
    assert load_config(environ={}).message_queue.workers is None


async def test_the_manager_uses_them_and_explicit_arguments_are_not_overridden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MEETQ_MESSAGE_QUEUE__WORKERS", "8")
    monkeypatch.setenv("MEETQ_TASK_DISPATCHER__SERVICE_NAME", "ai-worker")
    qm = await meetq.initialize_queue_system({"message_queue": {"type": "memory"}})
    try:
        mq, dispatcher = qm.get_message_queue(), qm.get_task_dispatcher()
        assert mq is not None and dispatcher is not None
        assert mq.config.workers == 8
        assert dispatcher.service_name == "ai-worker"
    finally:
        await qm.stop()
    # A queue built in code with its own settings keeps them: the code decided.
    own = MessageQueue(MemoryBackend(), queue_name="own", workers=2)
    assert own.config.workers == 2


@pytest.mark.parametrize("variable", ["MEETQ_REDIS_URL", "MEETQ_REDIS__URL"])
def test_a_bad_redis_url_names_the_variable(variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={variable: "http://h:1/0"})
    assert (info.value.key, info.value.value) == (variable, "http://h:1/0")
    assert str(info.value).startswith(f"config {variable}='http://h:1/0': unknown scheme 'http'")
    assert str(info.value).endswith("(it sets redis.url)")


def test_text_keys_are_never_read_as_yaml() -> None:
    config = load_config(
        environ={"MEETQ_EVENT_BUS__NAMESPACE": "off", "MEETQ_EVENT_BUS__OVERFLOW": "drop"}
    )
    assert (config.event_bus.namespace, config.event_bus.overflow) == ("off", "drop")
