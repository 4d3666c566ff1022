"""Configuration: the seed guide's YAML schema, validated where it enters.

The kernel owns the components' sections: ``message_queue``, ``task_scheduler``,
``event_bus``, ``task_dispatcher``. A backend owns its own section (``redis``,
``memory``, a plugin's): its ``BackendSpec.config`` names an attrs class built from the
field helpers below, and ``load_config`` validates that section with the same rules and
messages, learning the classes from a registry (``config_sections()``). Top-level
sections nobody owns (a service's ``database:``) are kept as given and never checked.

Design (why it looks like this): the kernel imports no backend, so it cannot know the
backends' sections by itself. ``load_config(registry=...)`` takes them from the registry
that will build the backends; without one it asks the default registry, a hook the
manager layer installs (``use_default_registry``) and that is only called when a config
names a section the kernel does not own. A backend reads its validated section with
``config.section(TheClass)``, typed, and gets the defaults when the file has none.

Every key is documented in ``docs/configuration.md``. Durations take a number in the
seed's unit for that key or a string with its own unit (``"30s"``, ``"100ms"``); they are
stored in seconds. ``MEETQ_<SECTION>__<KEY>`` environment variables override any key of
any section; a section class may name short forms (``ENV_SHORT_FORMS``, Redis's
``MEETQ_REDIS_URL``).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import attrs

from meetq.core._durations import parse_duration
from meetq.core._limits import RateLimit, check_concurrency_limits, check_rate_limits
from meetq.core._schedules import ScheduleDefinition, schedules_from_config
from meetq.core._validation import not_utf8
from meetq.core.errors import ConfigError, ValidationError

__all__ = [
    "COMPONENT_SECTIONS",
    "SECRET_SHOWN",
    "EventBusConfig",
    "MeetqConfig",
    "MessageQueueConfig",
    "SectionOwners",
    "TaskDispatcherConfig",
    "TaskSchedulerConfig",
    "bool_field",
    "check_section_class",
    "choice_field",
    "duration_field",
    "float_field",
    "int_field",
    "load_config",
    "str_field",
    "str_list_field",
    "use_default_registry",
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
    """A duration key: stored in seconds; a bare number in the file means ``unit``
    seconds (1.0, or 0.001 for a key in milliseconds); at least ``minimum`` seconds."""
    return attrs.field(
        default=default,
        validator=_validate,
        metadata={"kind": "duration", "unit": unit, "min": minimum},
    )


def _int(
    default: int | None, minimum: int, maximum: int = 10**9, *, optional: bool = False
) -> Any:
    """An integer key from ``minimum`` to ``maximum`` (a bool is refused); ``optional``:
    or null."""
    return attrs.field(
        default=default,
        validator=_validate,
        metadata={"kind": "int", "min": minimum, "max": maximum, "optional": optional},
    )


def _bool(default: bool) -> Any:
    """A ``true``/``false`` key."""
    return attrs.field(default=default, validator=_validate, metadata={"kind": "bool"})


def _str(
    default: str | None,
    *,
    optional: bool = False,
    forbid: str = "",
    max_len: int = 10_000,
    check: Callable[[str, str], None] | None = None,
    secret: bool = False,
) -> Any:
    """A non-empty text key (``optional``: or null), at most ``max_len`` characters,
    without any character of ``forbid``. ``check(path, value)`` may refuse more (raising
    ``ConfigError``): a backend's own format, such as the Redis URL. A ``secret`` (a
    password) is never shown: not in the config's repr, not in an error."""
    return attrs.field(
        default=default,
        validator=_validate,
        repr=not secret,
        metadata={
            "kind": "str",
            "optional": optional,
            "forbid": forbid,
            "max_len": max_len,
            "check": check,
            "secret": secret,
        },
    )


def _str_list(
    default: tuple[str, ...] = (),
    *,
    max_len: int = 1_000,
    check: Callable[[str, str], None] | None = None,
) -> Any:
    """A list of non-empty text values (at most ``max_len`` of them), stored as a tuple;
    ``check(path, item)`` may refuse an item (its path is ``key[i]``). In an environment
    variable: the items separated by commas (``h1:7000,h2:7001``) or a YAML flow list."""
    return attrs.field(
        default=default,
        validator=_validate,
        converter=_as_tuple,
        metadata={"kind": "str_list", "max_len": max_len, "check": check},
    )


def _as_tuple(value: Any) -> Any:
    # A list given in code is stored as the tuple load_config makes of it.
    return tuple(value) if isinstance(value, list) else value


def _choice(default: str, choices: tuple[str, ...]) -> Any:
    """A key that takes one of ``choices``."""
    return attrs.field(
        default=default, validator=_validate, metadata={"kind": "choice", "choices": choices}
    )


def _custom(default: Any, convert: Callable[[str, Any], Any], *, key: str) -> Any:
    """A key of its own shape (a list of mappings): ``convert(path, value)`` returns the
    stored value or raises ``ValidationError`` (turned into ``ConfigError`` naming the
    key); it must accept a value it returned. ``key`` is its dotted path, for a value
    given in code. Not settable from the environment."""
    meta = {"kind": "custom", "convert": convert}
    return attrs.field(
        default=default,
        # Built in code (MessageQueueConfig(schedules=[...])), the value is converted too.
        converter=lambda value: _convert(key, value, meta),
        metadata=meta,
    )


def _float(default: float, minimum: float, maximum: float) -> Any:
    """A number key from ``minimum`` to ``maximum``."""
    return attrs.field(
        default=default,
        validator=_validate,
        metadata={"kind": "float", "min": minimum, "max": maximum},
    )


def _limits(kind: str) -> Any:
    """A mapping of message type to a limit (``rate_limits``, ``concurrency_limits``:
    meetq/core/_limits.py); empty by default. Converted where it enters, so a config
    built directly holds parsed limits too; compared, not hashed (a mapping)."""
    check = check_rate_limits if kind == "rate_limits" else check_concurrency_limits
    path = f"message_queue.{kind}"  # only MessageQueueConfig has these keys
    return attrs.field(
        factory=dict,
        converter=lambda value: check(path, value),
        metadata={"kind": kind},
        hash=False,
    )


# The field helpers under the names backend authors use (re-exported by meetq.backend):
# every key of a section class is made with one, so load_config can convert it.
duration_field = _duration
int_field = _int
bool_field = _bool
str_field = _str
str_list_field = _str_list
choice_field = _choice
float_field = _float


@attrs.frozen(kw_only=True)
class MessageQueueConfig:
    """The reliable work queue (guide section 1)."""

    SECTION: ClassVar[str] = "message_queue"

    enabled: bool = _bool(True)
    type: str = _str("memory")
    queue_name: str = _str("default")
    # Handlers running at once; null (the default): see handler_workers().
    workers: int | None = _int(None, 1, 10_000, optional=True)
    prefetch: int = _int(0, 0, 100_000)
    visibility_timeout: float = _duration(30.0, SECONDS)
    poll_interval: float = _duration(0.1, MILLISECONDS)
    max_retries: int = _int(3, 0, 1000)
    enable_dead_letter_queue: bool = _bool(True)
    handler_timeout: float = _duration(0.0, SECONDS)
    # Threads for plain (non-async) handlers; 0: as many as ``workers`` (set), else
    # DEFAULT_SYNC_THREADS.
    sync_handler_threads: int = _int(0, 0, 10_000)
    retry_backoff_base: float = _duration(1.0, SECONDS)
    retry_backoff_max: float = _duration(300.0, SECONDS)
    retry_jitter: float = _float(0.2, 0.0, 1.0)
    unhandled_timeout: float = _duration(300.0, SECONDS)
    dead_letter_max_size: int = _int(100_000, 1, 10**9)
    dead_letter_max_age: float = _duration(7 * 86400.0, SECONDS)
    shutdown_grace: float = _duration(30.0, SECONDS)
    # Per message type, enforced inside the backend's claim for every process at once.
    rate_limits: Mapping[str, RateLimit] = _limits("rate_limits")
    concurrency_limits: Mapping[str, int] = _limits("concurrency_limits")
    # Tracking (CAP_TRACKING backends): how long a finished message's record and its
    # handler's return value are kept (0: off, result() refuses); how long a retry's last
    # error, progress reports and a cancelled message's record are kept.
    result_ttl: float = _duration(0.0, SECONDS)
    status_ttl: float = _duration(3600.0, SECONDS)
    # Named schedules stored in the backend at start() (docs/schedules.md), and whether
    # this process's consuming queue runs the fire loop.
    schedules: tuple[ScheduleDefinition, ...] = _custom(
        (), schedules_from_config, key="message_queue.schedules"
    )
    fire_schedules: bool = _bool(True)

    # Without ``workers``: an asyncio handler mostly waits (on I/O), and one more in
    # flight costs a task, so a worker with async handlers keeps this many running; a
    # plain handler holds a thread, so those stay bounded by the thread pool.
    DEFAULT_ASYNC_WORKERS: ClassVar[int] = 100
    DEFAULT_SYNC_THREADS: ClassVar[int] = 4

    def sync_threads(self) -> int:
        """Threads of the plain-handler pool: ``sync_handler_threads``, else
        ``workers``, else ``DEFAULT_SYNC_THREADS``."""
        return self.sync_handler_threads or self.workers or self.DEFAULT_SYNC_THREADS

    def handler_workers(self, *, any_async: bool) -> int:
        """Handlers that run at once: ``workers`` when set; unset, ``DEFAULT_ASYNC_WORKERS``
        when any handler is ``async``, else the plain-handler pool's size."""
        if self.workers is not None:
            return self.workers
        return self.DEFAULT_ASYNC_WORKERS if any_async else self.sync_threads()


@attrs.frozen(kw_only=True)
class TaskSchedulerConfig:
    """The in-process task scheduler (guide section 4)."""

    SECTION: ClassVar[str] = "task_scheduler"

    enabled: bool = _bool(True)
    buffer_size: int = _int(1000, 1, 10**8)
    workers: int = _int(8, 1, 10_000)
    enable_delayed_tasks: bool = _bool(True)
    retry_backoff_base: float = _duration(1.0, SECONDS)
    retry_backoff_max: float = _duration(60.0, SECONDS)
    retry_jitter: float = _float(0.2, 0.0, 1.0)
    shutdown_grace: float = _duration(5.0, SECONDS)
    # Final tasks whose snapshots get_task()/wait() still return.
    keep_finished: int = _int(10_000, 0, 10**9)


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
    # The PubSub channel status reports are broadcast on (when a PubSub is given).
    status_channel: str = _str("tasks.status", max_len=1000)
    # Final tasks whose status get_task_status() still returns.
    keep_finished: int = _int(1000, 0, 10**9)
    # Added to a task's longest possible run (attempts, timeouts, backoff) for its deadline.
    deadline_margin: float = _duration(5.0, SECONDS)


_SECTIONS: dict[str, type[Any]] = {
    "message_queue": MessageQueueConfig,
    "task_scheduler": TaskSchedulerConfig,
    "event_bus": EventBusConfig,
    "task_dispatcher": TaskDispatcherConfig,
}
#: The sections the kernel owns (the components'); no backend may claim one.
COMPONENT_SECTIONS = frozenset(_SECTIONS)

_S = TypeVar("_S")


@attrs.frozen(kw_only=True)
class MeetqConfig:
    """The whole configuration; build it with ``load_config``.

    ``backends`` holds the backend sections a registry validated, by section name;
    ``others`` every other top-level section as it was given (a service's own
    ``database:``, or a backend's section no registry has validated yet). Read a
    backend's section with ``section(TheClass)``.
    """

    message_queue: MessageQueueConfig = attrs.field(factory=MessageQueueConfig)
    task_scheduler: TaskSchedulerConfig = attrs.field(factory=TaskSchedulerConfig)
    event_bus: EventBusConfig = attrs.field(factory=EventBusConfig)
    task_dispatcher: TaskDispatcherConfig = attrs.field(factory=TaskDispatcherConfig)
    # Compared, not hashed (a mapping cannot be): a config stays usable as a dict key.
    backends: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    others: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    def section(self, cls: type[_S]) -> _S:
        """The validated section of class ``cls`` (a backend's ``BackendSpec.config``):
        the one ``load_config`` built, else built now from the raw section (a bad value
        raises ``ConfigError`` naming the key), else every default."""
        name = check_section_class(cls)
        built = self.backends.get(name)
        if type(built) is cls:
            return built
        result: _S = _build_section(name, cls, self.others.get(name))
        return result


class SectionOwners(Protocol):
    """Where ``load_config`` learns the backends' sections (a ``BackendRegistry``)."""

    def config_sections(self) -> Mapping[str, type[Any]]:
        """Section name to its attrs class, for every registered backend that has one."""
        ...


_default_owners: Callable[[], SectionOwners] | None = None


def use_default_registry(factory: Callable[[], SectionOwners] | None) -> None:
    """Install how ``load_config`` gets a registry when it is given none (the manager
    layer installs ``build_registry``; the kernel cannot import it). ``None`` removes it:
    then only the components' sections are checked and backends' are kept raw."""
    global _default_owners
    _default_owners = factory


_SECTION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def check_section_class(cls: Any) -> str:
    """The section name of ``cls``; ``ConfigError`` unless it is a section class: an attrs
    class with a ``SECTION`` name the kernel does not own and every key made with a field
    helper."""
    name = getattr(cls, "SECTION", None)
    where = getattr(cls, "__qualname__", repr(cls))
    if not (isinstance(cls, type) and attrs.has(cls)):
        raise ConfigError("<section>", where, "a config section must be an attrs class")
    if not isinstance(name, str) or not _SECTION_NAME.match(name):
        raise ConfigError(
            "<section>", where, f"SECTION must be a lower-case identifier, not {name!r}"
        )
    if name in COMPONENT_SECTIONS:
        raise ConfigError(f"{name}", where, "is a component's section; a backend needs its own")
    for field in attrs.fields(cls):
        if "kind" not in field.metadata:
            raise ConfigError(
                f"{name}.{field.name}", where, "make every key with meetq's field helpers"
            )
    return name


def _unknown(key: str, value: Any, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
    return ConfigError(key, value, "unknown key" + hint)


def _convert(path: str, value: Any, meta: Mapping[str, Any]) -> Any:
    kind = meta["kind"]
    if kind == "custom":
        try:
            return meta["convert"](path, value)
        except ValidationError as exc:
            raise ConfigError(exc.field, exc.value, exc.problem) from None
    if kind == "duration":
        try:
            seconds = parse_duration(value, number_unit=meta["unit"])
        except ValueError as exc:
            raise ConfigError(path, value, str(exc)) from None
        _check_minimum(path, seconds, meta)
        return seconds
    if kind == "int":
        if value is None and meta.get("optional"):
            return None
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
    if kind == "rate_limits":
        return check_rate_limits(path, value)
    if kind == "concurrency_limits":
        return check_concurrency_limits(path, value)
    if kind == "choice":
        if value not in meta["choices"]:
            raise ConfigError(path, value, f"expected one of {', '.join(meta['choices'])}")
        return value
    if kind == "str_list":
        return _str_list_value(path, value, meta)
    if value is None and meta.get("optional"):
        return None
    shown = SECRET_SHOWN if meta.get("secret") else value
    if not isinstance(value, str) or not value:
        raise ConfigError(path, shown, "expected a non-empty string")
    if not_utf8(value):
        raise ConfigError(path, shown, "not valid Unicode (a lone surrogate)")
    if len(value) > meta.get("max_len", 10_000):
        raise ConfigError(path, shown, f"at most {meta['max_len']} characters")
    bad = [c for c in meta.get("forbid", "") if c in value]
    if bad:
        raise ConfigError(path, shown, f"must not contain {bad[0]!r}")
    check = meta.get("check")
    if check is not None:
        check(path, value)
    return value


# What an error shows in place of a secret's value.
SECRET_SHOWN = "<secret>"


def _str_list_value(path: str, value: Any, meta: Mapping[str, Any]) -> tuple[str, ...]:
    if isinstance(value, str):  # an environment variable's text: comma-separated
        value = [part.strip() for part in value.split(",")] if value.strip() else []
    if not isinstance(value, list | tuple):
        raise ConfigError(path, value, "expected a list of strings")
    if len(value) > meta["max_len"]:
        raise ConfigError(path, value, f"at most {meta['max_len']} items")
    item = {"kind": "str", "check": meta.get("check")}
    for i, entry in enumerate(value):
        _convert(f"{path}[{i}]", entry, item)
    return tuple(value)


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
    registry: SectionOwners | None = None,
) -> MeetqConfig:
    """Read and validate a config from a YAML file path, a mapping, or ``None`` (defaults).

    Unknown keys, wrong types and impossible values raise ``ConfigError`` naming the
    dotted key path and the value. The components' sections are always checked; a
    backend's section (``redis``, ``memory``, a plugin's) is checked by the class its
    ``BackendSpec`` declares, taken from ``registry`` (default: the installed default
    registry, see ``use_default_registry``). Other top-level sections of a larger service
    config (``database``, ``logging``, ...) are kept in ``others`` and never checked.

    ``environ`` (default ``os.environ``; ``{}`` ignores the environment) overrides any key:
    ``MEETQ_<SECTION>__<KEY>`` (``MEETQ_MESSAGE_QUEUE__WORKERS=8``), and a section's short
    forms (``MEETQ_REDIS_URL`` for ``redis.url``). See ``_environment_overrides``.
    """
    env = os.environ if environ is None else environ
    owners = _Owners(registry)
    overrides = _environment_overrides(env, owners)
    if isinstance(source, MeetqConfig):
        return _evolve_with(source, overrides, owners)
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
    sections = {name: _build_section(name, cls, raw.get(name)) for name, cls in _SECTIONS.items()}
    others = {name: value for name, value in raw.items() if name not in _SECTIONS}
    backends = {
        name: _build_section(name, cls, others[name])
        for name, cls in (owners.get() if others else {}).items()
        if name in others
    }
    return MeetqConfig(**sections, backends=backends, others=others)


class _Owners:
    """The backends' section classes, asked of the registry only when a config names a
    section the kernel does not own (building the default registry scans entry points)."""

    def __init__(self, registry: SectionOwners | None) -> None:
        self._registry = registry
        self._sections: Mapping[str, type[Any]] | None = None

    def get(self) -> Mapping[str, type[Any]]:
        if self._sections is None:
            registry = self._registry
            if registry is None and _default_owners is not None:
                registry = _default_owners()
            self._sections = dict(registry.config_sections()) if registry is not None else {}
        return self._sections


# -- environment overrides ---------------------------------------------------------------

ENV_PREFIX = "MEETQ_"
ENV_SEPARATOR = "__"


def _environment_overrides(
    environ: Mapping[str, str], owners: _Owners
) -> dict[str, dict[str, Any]]:
    """``MEETQ_<SECTION>__<KEY>`` variables as raw values by section, each checked as the
    same key in a YAML file would be, so a bad one is refused naming the variable.

    Keys whose values are text take it as it is (a queue named ``007`` stays a string);
    every other key reads it as a YAML scalar, so ``8``, ``true``, ``30`` (in the key's
    unit) and ``"30s"`` mean what they mean in the file. An empty variable is ignored.
    A variable for a section nobody owns is an error (it was meant for meetq). Names
    without the double underscore are not overrides, except a section class's
    ``ENV_SHORT_FORMS`` (``MEETQ_REDIS_URL``), which must agree with the long form.
    """
    overrides: dict[str, dict[str, Any]] = {}
    short_forms = False
    for variable in sorted(environ):
        text = environ[variable]
        if not variable.startswith(ENV_PREFIX) or not text:
            continue
        if ENV_SEPARATOR not in variable:
            short_forms = True
            continue
        section, _, key = variable[len(ENV_PREFIX) :].lower().partition(ENV_SEPARATOR)
        cls = _SECTIONS.get(section) or owners.get().get(section)
        if cls is None:
            known = {**_SECTIONS, **owners.get()}
            guess = _closest(section, known)
            hint = (
                f"did you mean {_variable(guess, key)}?"
                if guess
                else f"known sections: {', '.join(known)}"
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
    if short_forms:
        for section, cls in owners.get().items():
            for variable, key in getattr(cls, "ENV_SHORT_FORMS", {}).items():
                short = environ.get(variable)
                if not short:
                    continue
                text = short
                long = overrides.get(section, {}).get(key)
                if long is not None and long != text:
                    raise ConfigError(
                        variable,
                        text,
                        f"conflicts with {_variable(section, key)}={long!r}; set one",
                    )
                field = attrs.fields_dict(cls)[key]
                overrides.setdefault(section, {})[key] = _checked(variable, text, section, field)
    return overrides


# Kinds whose values are text: the variable is taken as it is, never read as YAML (a
# queue named "007" or "off" stays that string).
_TEXT_KINDS = frozenset({"str", "choice"})
# Kinds whose values are mappings: the variable holds a YAML flow mapping.
_MAPPING_KINDS = frozenset({"rate_limits", "concurrency_limits"})


def _checked(variable: str, text: str, section: str, field: attrs.Attribute[Any]) -> Any:
    """The raw value ``variable`` gives ``section.<field>``, checked as the YAML would be."""
    meta = field.metadata
    kind = meta["kind"]
    value: Any
    if kind == "custom":  # a list of mappings: YAML flow style in the variable
        value = _yaml_value(variable, text)
    elif kind == "str_list":
        # Comma-separated items, or a YAML flow list.
        value = _yaml_list(variable, text) if text.lstrip().startswith("[") else text
    elif kind in _TEXT_KINDS:
        value = text
    else:
        value = _yaml_scalar(variable, text, mapping=kind in _MAPPING_KINDS)
    try:
        _convert(f"{section}.{field.name}", value, meta)
    except ConfigError as exc:
        shown = SECRET_SHOWN if meta.get("secret") else text
        raise ConfigError(
            variable, shown, f"{exc.problem} (it sets {section}.{field.name})"
        ) from None
    return value


def _closest(name: str, known: Mapping[str, Any]) -> str | None:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return close[0] if close else None


def _variable(section: str, key: str) -> str:
    """The environment variable that sets ``section.key``."""
    return f"{ENV_PREFIX}{section.upper()}{ENV_SEPARATOR}{key.upper()}"


def _yaml_value(variable: str, text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(variable, text, "not a YAML value") from None


def _yaml_scalar(variable: str, text: str, *, mapping: bool = False) -> Any:
    """One YAML value; with ``mapping``, a flow mapping too (``{mail: 100/s}``)."""
    value = _yaml_value(variable, text)
    if mapping and isinstance(value, Mapping):
        return value
    if isinstance(value, Mapping | list):
        raise ConfigError(variable, text, "expected one value, not a YAML mapping or list")
    return value


def _yaml_list(variable: str, text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(variable, text, "not a YAML list") from None


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


def _evolve_with(
    config: MeetqConfig, overrides: Mapping[str, Mapping[str, Any]], owners: _Owners
) -> MeetqConfig:
    """A built config with the overrides applied (already checked, converted here), and
    the backend sections of ``owners`` it carries raw validated now."""
    changes: dict[str, Any] = {}
    others = config.others
    if overrides.keys() - _SECTIONS.keys():
        others = _overlay(others, {k: v for k, v in overrides.items() if k not in _SECTIONS})
        changes["others"] = others
    for section, values in overrides.items():
        if section not in _SECTIONS:
            continue
        current = getattr(config, section)
        fields = {f.name: f for f in attrs.fields(type(current))}
        converted = {
            key: _convert(f"{section}.{key}", value, fields[key].metadata)
            for key, value in values.items()
        }
        changes[section] = attrs.evolve(current, **converted)
    stale = {
        name: cls
        for name, cls in (owners.get() if others else {}).items()
        if name in others and (name in overrides or type(config.backends.get(name)) is not cls)
    }
    if stale:
        changes["backends"] = {
            **config.backends,
            **{name: _build_section(name, cls, others[name]) for name, cls in stale.items()},
        }
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
