"""Configuration: the seed guide's YAML schema, validated where it enters.

Sections: ``redis``, ``message_queue``, ``task_scheduler``, ``event_bus``,
``task_dispatcher``. Every key is documented in ``docs/configuration.md``. Durations take
a number in the seed's unit for that key or a string with its own unit (``"30s"``,
``"100ms"``); they are stored in seconds. ``MEETQ_<SECTION>__<KEY>`` environment
variables override any key; ``MEETQ_REDIS_URL`` overrides ``redis.url``.
"""

from __future__ import annotations

import difflib
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs

from meetq.core._durations import parse_duration
from meetq.core._validation import not_utf8
from meetq.core.errors import ConfigError

__all__ = [
    "EventBusConfig",
    "MeetqConfig",
    "MessageQueueConfig",
    "RedisConfig",
    "TaskDispatcherConfig",
    "TaskSchedulerConfig",
    "load_config",
]

SECONDS = 1.0
MILLISECONDS = 0.001


def _validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Checks a stored value, so a config class built directly is held to the same rules
    as ``load_config`` (which converts seed units and strings before this runs)."""
    section = getattr(type(instance), "SECTION", type(instance).__name__)
    path = f"{section}.{attribute.name}"
    if attribute.metadata["kind"] == "duration":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, value, "expected seconds, finite and not negative")
        try:
            parse_duration(value, number_unit=SECONDS)
        except ValueError as exc:
            raise ConfigError(path, value, str(exc)) from None
        _check_minimum(path, value, attribute.metadata)
        return
    _convert(path, value, attribute.metadata)


def _check_minimum(path: str, seconds: float, meta: Mapping[str, Any]) -> None:
    minimum = meta.get("min", 0.0)
    if seconds < minimum:
        raise ConfigError(path, seconds, f"must be at least {minimum * 1000:g} ms")


def _duration(default: float, unit: float, *, minimum: float = 0.0) -> Any:
    return attrs.field(
        default=default,
        validator=_validate,
        metadata={"kind": "duration", "unit": unit, "min": minimum},
    )


def _int(default: int, minimum: int, maximum: int = 10**9) -> Any:
    return attrs.field(
        default=default,
        validator=_validate,
        metadata={"kind": "int", "min": minimum, "max": maximum},
    )


def _bool(default: bool) -> Any:
    return attrs.field(default=default, validator=_validate, metadata={"kind": "bool"})


def _str(
    default: str | None, *, optional: bool = False, forbid: str = "", max_len: int = 10_000
) -> Any:
    return attrs.field(
        default=default,
        validator=_validate,
        metadata={"kind": "str", "optional": optional, "forbid": forbid, "max_len": max_len},
    )


def _redis_url(default: str) -> Any:
    return attrs.field(default=default, validator=_validate, metadata={"kind": "redis_url"})


def _choice(default: str, choices: tuple[str, ...]) -> Any:
    return attrs.field(
        default=default, validator=_validate, metadata={"kind": "choice", "choices": choices}
    )


def _float(default: float, minimum: float, maximum: float) -> Any:
    return attrs.field(
        default=default,
        validator=_validate,
        metadata={"kind": "float", "min": minimum, "max": maximum},
    )


@attrs.frozen(kw_only=True)
class RedisConfig:
    """Connection to Redis, used by every component whose ``type`` is a Redis one."""

    SECTION: ClassVar[str] = "redis"

    url: str = _redis_url("redis://127.0.0.1:6379/0")
    # The bound of every call against a server that stopped answering (a hung host, a
    # partition); 0 means none. The hot paths enforce it with one shared timer instead of
    # redis-py's per-command ones (see meetq/backends/redis/_deadline.py).
    socket_timeout: float = _duration(5.0, SECONDS)
    socket_connect_timeout: float = _duration(5.0, SECONDS)
    # A pooled connection idle this long is PINGed before it carries a command, and the
    # wake-up listener and the Pub/Sub subscriber PING a connection silent this long (a
    # frozen peer sends no FIN; only an unanswered PING shows it). 0: no pooled checks,
    # the listeners then PING after 15 s.
    health_check_interval: float = _duration(10.0, SECONDS)
    # TCP keepalive, in whole seconds as the socket options take them (Linux caps them
    # at 32767 and 127): with the OS defaults a vanished peer is noticed after about two
    # hours, with these after idle + interval * count.
    tcp_keepalive: bool = _bool(True)
    tcp_keepalive_idle: int = _int(15, 1, 32767)
    tcp_keepalive_interval: int = _int(5, 1, 32767)
    tcp_keepalive_count: int = _int(3, 1, 127)
    max_connections: int = _int(64, 1, 100_000)
    key_prefix: str = _str("meetq")


@attrs.frozen(kw_only=True)
class MessageQueueConfig:
    """The reliable work queue (guide section 1)."""

    SECTION: ClassVar[str] = "message_queue"

    enabled: bool = _bool(True)
    type: str = _str("memory")
    queue_name: str = _str("default")
    workers: int = _int(4, 1, 10_000)
    prefetch: int = _int(0, 0, 100_000)
    visibility_timeout: float = _duration(30.0, SECONDS)
    poll_interval: float = _duration(0.1, MILLISECONDS)
    max_retries: int = _int(3, 0, 1000)
    enable_dead_letter_queue: bool = _bool(True)
    handler_timeout: float = _duration(0.0, SECONDS)
    # Threads for plain (non-async) handlers; 0: as many as ``workers``.
    sync_handler_threads: int = _int(0, 0, 10_000)
    retry_backoff_base: float = _duration(1.0, SECONDS)
    retry_backoff_max: float = _duration(300.0, SECONDS)
    retry_jitter: float = _float(0.2, 0.0, 1.0)
    unhandled_timeout: float = _duration(300.0, SECONDS)
    dead_letter_max_size: int = _int(100_000, 1, 10**9)
    dead_letter_max_age: float = _duration(7 * 86400.0, SECONDS)
    shutdown_grace: float = _duration(30.0, SECONDS)


@attrs.frozen(kw_only=True)
class TaskSchedulerConfig:
    """The in-process task scheduler (guide section 4)."""

    SECTION: ClassVar[str] = "task_scheduler"

    enabled: bool = _bool(True)
    buffer_size: int = _int(1000, 1, 10**8)
    workers: int = _int(8, 1, 10_000)
    enable_delayed_tasks: bool = _bool(True)


@attrs.frozen(kw_only=True)
class EventBusConfig:
    """Broadcast (``type``: ``redis_pubsub`` or ``memory``) and the local event bus."""

    SECTION: ClassVar[str] = "event_bus"

    enabled: bool = _bool(True)
    type: str = _str("memory")
    buffer_size: int = _int(1000, 1, 10**8)
    workers: int = _int(4, 1, 10_000)
    namespace: str = _str("meetq")
    overflow: str = _choice("raise", ("raise", "drop", "wait"))
    subscriber_buffer: int = _int(1000, 1, 10**8)
    subscriber_overflow: str = _choice("drop_oldest", ("drop_oldest", "drop_newest", "block"))
    # Not below 1 ms: a zero base would reconnect in a tight loop while Redis is down.
    reconnect_backoff_base: float = _duration(0.1, SECONDS, minimum=0.001)
    reconnect_backoff_max: float = _duration(5.0, SECONDS)
    shutdown_grace: float = _duration(5.0, SECONDS)


@attrs.frozen(kw_only=True)
class TaskDispatcherConfig:
    """Task routing (guide section 5)."""

    SECTION: ClassVar[str] = "task_dispatcher"

    enabled: bool = _bool(True)
    enable_routing: bool = _bool(True)
    enable_callbacks: bool = _bool(True)
    # Which service this process is: tasks routed to it are served here (not in the seed).
    service_name: str | None = _str(None, optional=True, forbid="@", max_len=100)


_SECTIONS: dict[str, type[Any]] = {
    "redis": RedisConfig,
    "message_queue": MessageQueueConfig,
    "task_scheduler": TaskSchedulerConfig,
    "event_bus": EventBusConfig,
    "task_dispatcher": TaskDispatcherConfig,
}


@attrs.frozen(kw_only=True)
class MeetqConfig:
    """The whole configuration; build it with ``load_config``."""

    redis: RedisConfig = attrs.field(factory=RedisConfig)
    message_queue: MessageQueueConfig = attrs.field(factory=MessageQueueConfig)
    task_scheduler: TaskSchedulerConfig = attrs.field(factory=TaskSchedulerConfig)
    event_bus: EventBusConfig = attrs.field(factory=EventBusConfig)
    task_dispatcher: TaskDispatcherConfig = attrs.field(factory=TaskDispatcherConfig)


def _unknown(key: str, value: Any, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
    return ConfigError(key, value, "unknown key" + hint)


def _convert(path: str, value: Any, meta: Mapping[str, Any]) -> Any:
    kind = meta["kind"]
    if kind == "duration":
        try:
            seconds = parse_duration(value, number_unit=meta["unit"])
        except ValueError as exc:
            raise ConfigError(path, value, str(exc)) from None
        _check_minimum(path, seconds, meta)
        return seconds
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, value, "expected an integer")
        if not meta["min"] <= value <= meta["max"]:
            raise ConfigError(path, value, f"must be between {meta['min']} and {meta['max']}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, value, "expected a number")
        if not meta["min"] <= value <= meta["max"]:
            raise ConfigError(path, value, f"must be between {meta['min']} and {meta['max']}")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(path, value, "expected true or false")
        return value
    if kind == "choice":
        if value not in meta["choices"]:
            raise ConfigError(path, value, f"expected one of {', '.join(meta['choices'])}")
        return value
    if value is None and meta.get("optional"):
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(path, value, "expected a non-empty string")
    if not_utf8(value):
        raise ConfigError(path, value, "not valid Unicode (a lone surrogate)")
    if kind == "redis_url":
        _check_redis_url(path, value)
        return value
    if len(value) > meta.get("max_len", 10_000):
        raise ConfigError(path, value, f"at most {meta['max_len']} characters")
    bad = [c for c in meta.get("forbid", "") if c in value]
    if bad:
        raise ConfigError(path, value, f"must not contain {bad[0]!r}")
    return value


_URL_HELP = "expected redis://[user:password@]host[:port][/db], rediss://... or unix:///path"
# Query arguments redis-py converts itself (redis.connection.URL_QUERY_ARGUMENT_PARSERS);
# the numeric ones are checked here: a bad one is a ConfigError at load time, not a
# ValueError at connect.
_URL_INT_ARGS = ("db", "max_connections", "health_check_interval")
_URL_FLOAT_ARGS = ("socket_timeout", "socket_connect_timeout", "timeout")


def _check_redis_url(path: str, url: str) -> None:
    """Refuse what redis-py's ``from_url`` would raise on later, naming the part."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise ConfigError(path, url, f"not a valid URL ({exc}); {_URL_HELP}") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(path, url, f"unknown scheme {parts.scheme!r}; {_URL_HELP}")
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(path, url, f"a unix URL needs a socket path; {_URL_HELP}")
    else:
        if not parts.hostname:
            raise ConfigError(path, url, f"no host; {_URL_HELP}")
        if port == 0:
            raise ConfigError(path, url, "port 0 cannot be connected to")
        db = urllib.parse.unquote(parts.path).replace("/", "")
        if db and not (db.isascii() and db.isdigit()):
            raise ConfigError(path, url, f"the path must be a database number, not {db!r}")
    for name, values in urllib.parse.parse_qs(parts.query).items():
        value = urllib.parse.unquote(values[0]).strip()
        try:
            if name in _URL_INT_ARGS:
                int(value)
            elif name in _URL_FLOAT_ARGS:
                parse_duration(float(value), number_unit=SECONDS)
        except ValueError:
            raise ConfigError(path, url, f"query argument {name}={value!r} is invalid") from None


def _build_section(name: str, cls: type[Any], raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(name, raw, "expected a mapping of keys to values")
    fields = {f.name: f for f in attrs.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{name}.{key}"
        if key not in fields:
            raise _unknown(path, value, sorted(fields))
        values[key] = _convert(path, value, fields[key].metadata)
    return cls(**values)


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | MeetqConfig | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> MeetqConfig:
    """Read and validate a config from a YAML file path, a mapping, or ``None`` (defaults).

    Unknown keys, wrong types and impossible values raise ``ConfigError`` naming the
    dotted key path and the value. Extra top-level sections of a larger service config
    (database, logging, ...) are ignored; only meetq's sections are checked.

    ``environ`` (default ``os.environ``; ``{}`` ignores the environment) overrides any key:
    ``MEETQ_<SECTION>__<KEY>`` (``MEETQ_MESSAGE_QUEUE__WORKERS=8``), and
    ``MEETQ_REDIS_URL`` for ``redis.url``. See ``_environment_overrides``.
    """
    env = os.environ if environ is None else environ
    overrides = _environment_overrides(env)
    if isinstance(source, MeetqConfig):
        config = _evolve_with(source, overrides)
    else:
        raw: Any
        if source is None:
            raw = {}
        elif isinstance(source, str | os.PathLike):
            raw = _read_yaml(Path(source))
        else:
            raw = source
        if not isinstance(raw, Mapping):
            raise ConfigError("<root>", raw, "expected a mapping of sections")
        raw = _overlay(raw, overrides)
        sections = {
            name: _build_section(name, cls, raw.get(name)) for name, cls in _SECTIONS.items()
        }
        config = MeetqConfig(**sections)
    return config


# -- environment overrides ---------------------------------------------------------------

ENV_PREFIX = "MEETQ_"
ENV_SEPARATOR = "__"


def _environment_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``MEETQ_<SECTION>__<KEY>`` variables as raw values by section, each checked as the
    same key in a YAML file would be, so a bad one is refused naming the variable.

    Keys whose values are text take it as it is (a queue named ``007`` stays a string);
    every other key reads it as a YAML scalar, so ``8``, ``true``, ``30`` (in the key's
    unit) and ``"30s"`` mean what they mean in the file. An empty variable is ignored, like
    an empty ``MEETQ_REDIS_URL``. Names without the double underscore (``MEETQ_REDIS_URL``,
    ``MEETQ_TEST_REDIS_URL``) are not overrides.
    """
    overrides: dict[str, dict[str, Any]] = {}
    for variable in sorted(environ):
        text = environ[variable]
        if not variable.startswith(ENV_PREFIX) or ENV_SEPARATOR not in variable or not text:
            continue
        section, _, key = variable[len(ENV_PREFIX) :].lower().partition(ENV_SEPARATOR)
        cls = _SECTIONS.get(section)
        if cls is None:
            guess = _closest(section, _SECTIONS)
            hint = (
                f"did you mean {_variable(guess, key)}?"
                if guess
                else f"known sections: {', '.join(_SECTIONS)}"
            )
            raise ConfigError(variable, text, f"unknown section {section!r}; {hint}")
        fields = {f.name: f for f in attrs.fields(cls)}
        if key not in fields:
            guess = _closest(key, fields)
            hint = (
                f"did you mean {_variable(section, guess)}?"
                if guess
                else f"known keys: {', '.join(sorted(fields))}"
            )
            raise ConfigError(variable, text, f"unknown key {section}.{key}; {hint}")
        overrides.setdefault(section, {})[key] = _checked(variable, text, section, fields[key])
    # The older short form of MEETQ_REDIS__URL, kept working.
    short = environ.get("MEETQ_REDIS_URL")
    if short:
        long = overrides.get("redis", {}).get("url")
        if long is not None and long != short:
            raise ConfigError(
                "MEETQ_REDIS_URL", short, f"conflicts with MEETQ_REDIS__URL={long!r}; set one"
            )
        url = attrs.fields_dict(RedisConfig)["url"]
        overrides.setdefault("redis", {})["url"] = _checked("MEETQ_REDIS_URL", short, "redis", url)
    return overrides


# Kinds whose values are text: the variable is taken as it is, never read as YAML (a
# queue named "007" or "off" stays that string).
_TEXT_KINDS = frozenset({"str", "redis_url", "choice"})


def _checked(variable: str, text: str, section: str, field: attrs.Attribute[Any]) -> Any:
    """The raw value ``variable`` gives ``section.<field>``, checked as the YAML would be."""
    meta = field.metadata
    value = text if meta["kind"] in _TEXT_KINDS else _yaml_scalar(variable, text)
    try:
        _convert(f"{section}.{field.name}", value, meta)
    except ConfigError as exc:
        raise ConfigError(
            variable, text, f"{exc.problem} (it sets {section}.{field.name})"
        ) from None
    return value


def _closest(name: str, known: Mapping[str, Any]) -> str | None:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return close[0] if close else None


def _variable(section: str, key: str) -> str:
    """The environment variable that sets ``section.key``."""
    return f"{ENV_PREFIX}{section.upper()}{ENV_SEPARATOR}{key.upper()}"


def _yaml_scalar(variable: str, text: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(variable, text, "not a YAML value") from None
    if isinstance(value, Mapping | list):
        raise ConfigError(variable, text, "expected one value, not a YAML mapping or list")
    return value


def _overlay(raw: Mapping[str, Any], overrides: Mapping[str, Mapping[str, Any]]) -> Any:
    """``raw`` with the overrides laid over its sections (before any validation)."""
    if not overrides:
        return raw
    merged = dict(raw)
    for section, values in overrides.items():
        current = merged.get(section)
        if current is None:
            current = {}
        if isinstance(current, Mapping):  # otherwise _build_section names the bad section
            merged[section] = {**current, **values}
    return merged


def _evolve_with(config: MeetqConfig, overrides: Mapping[str, Mapping[str, Any]]) -> MeetqConfig:
    """A built config with the overrides applied (already checked, converted here)."""
    changes: dict[str, Any] = {}
    for section, values in overrides.items():
        current = getattr(config, section)
        fields = {f.name: f for f in attrs.fields(type(current))}
        converted = {
            key: _convert(f"{section}.{key}", value, fields[key].metadata)
            for key, value in values.items()
        }
        changes[section] = attrs.evolve(current, **converted)
    return attrs.evolve(config, **changes) if changes else config


def _read_yaml(path: Path) -> Any:
    import yaml  # only needed when reading files

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("<file>", str(path), f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("<file>", str(path), f"not UTF-8 text: {exc.reason}") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError("<file>", str(path), f"not valid YAML: {exc}") from None
    except RecursionError:  # PyYAML composes recursively; no config nests that deep
        raise ConfigError("<file>", str(path), "not valid YAML: nested too deeply") from None
