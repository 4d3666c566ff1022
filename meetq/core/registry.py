"""The typed registry that backend plugins fill in.

Plugins call ``registry.register(BackendSpec(...))`` from their
``meetq_register_backends`` hook. The factory is only called when a config selects the
backend, so registering never imports a driver.
"""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from meetq.core.config import MeetqConfig, check_section_class
from meetq.core.errors import (
    BackendError,
    BackendNotFoundError,
    ConfigError,
    MissingDependencyError,
    PluginError,
    ValidationError,
)
from meetq.core.protocols import CAPABILITIES, Backend, SyncBackend

__all__ = ["BackendContext", "BackendRegistry", "BackendSpec", "Requirement"]


@attrs.frozen(kw_only=True)
class BackendContext:
    """What a backend factory receives: the validated config and an optional client.

    A backend reads its own section with ``context.config.section(ItsConfigClass)``.
    ``client`` is whatever the caller passed to ``initialize_queue_system(redis=...)``;
    a backend that needs no client ignores it.
    """

    config: MeetqConfig
    client: Any = None


@attrs.frozen(kw_only=True)
class Requirement:
    """A module the backend imports when created, and the command that installs it."""

    module: str
    install: str


# Typed converters: mypy cannot infer the generic ``frozenset``/``tuple`` as converters.
def _str_set(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


def _known_capabilities(instance: Any, attribute: Any, value: frozenset[str]) -> None:
    # A misspelt capability would grant nothing and skip its tests forever, silently.
    unknown = sorted(value - CAPABILITIES)
    if unknown:
        raise ValidationError(
            "capabilities",
            unknown[0],
            f"not a capability; declare some of: {', '.join(sorted(CAPABILITIES))}",
        )


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _requirements(value: Iterable[Requirement]) -> tuple[Requirement, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class BackendSpec:
    """A backend offered by a plugin.

    ``name`` is what ``type:`` selects; ``aliases`` are other accepted spellings (the
    seed's ``redis_pubsub``). ``capabilities`` (names from ``CAPABILITIES``) is
    the one declaration of what the backend offers beyond the contract; the contract
    suite skips a test marked ``meetq.testing.requires(...)`` by it, never by name.
    ``config`` is the attrs class of the backend's own top-level config section (its
    ``SECTION`` names it; every key made with the field helpers of ``meetq.backend``):
    ``load_config`` validates that section with it. ``sync_factory`` (optional) builds
    the backend's blocking face for ``meetq.sync``; without it the sync producer refuses
    the backend, naming it.
    """

    name: str = attrs.field(validator=attrs.validators.matches_re(r"^[a-z][a-z0-9_\-]*$"))
    factory: Callable[[BackendContext], Backend]
    capabilities: frozenset[str] = attrs.field(
        default=frozenset(), converter=_str_set, validator=_known_capabilities
    )
    aliases: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    requires: tuple[Requirement, ...] = attrs.field(default=(), converter=_requirements)
    config: type[Any] | None = attrs.field(default=None)
    description: str = ""
    sync_factory: Callable[[BackendContext], SyncBackend] | None = None

    @config.validator
    def _check_config(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            try:
                check_section_class(value)
            except ConfigError as exc:
                key = "" if exc.key.startswith("<") else f" key {exc.key}"
                raise PluginError(
                    f"backend {self.name!r}: config class {exc.value}{key}: {exc.problem}"
                ) from None


class BackendRegistry:
    """Backend specs by name; rejects duplicates naming both plugins."""

    def __init__(self) -> None:
        self._specs: dict[str, BackendSpec] = {}
        self._owners: dict[str, str] = {}
        self._sections: dict[str, BackendSpec] = {}
        self._current_plugin = "<direct>"

    def register(self, spec: BackendSpec) -> None:
        """Add ``spec``; raise ``PluginError`` if its name or an alias is taken."""
        if not isinstance(spec, BackendSpec):
            raise PluginError(
                f"plugin {self._current_plugin!r} registered {spec!r}, which is not a BackendSpec"
            )
        for name in (spec.name, *spec.aliases):
            if name in self._specs:
                raise PluginError(
                    f"backend name {name!r} from plugin {self._current_plugin!r} is already "
                    f"registered by plugin {self._owners[name]!r}; rename one of them"
                )
        section = spec.config.SECTION if spec.config is not None else None
        other = self._sections.get(section) if section is not None else None
        if other is not None and other.config is not spec.config:
            raise PluginError(
                f"config section {section!r} of backend {spec.name!r} from plugin "
                f"{self._current_plugin!r} is already the section of backend {other.name!r} "
                f"from plugin {self._owners[other.name]!r}; rename one of them"
            )
        for name in (spec.name, *spec.aliases):
            self._specs[name] = spec
            self._owners[name] = self._current_plugin
        if section is not None and other is None:
            self._sections[section] = spec

    def config_sections(self) -> dict[str, type[Any]]:
        """Section name to its class, for every backend that declares a section."""
        return {
            name: spec.config for name, spec in self._sections.items() if spec.config is not None
        }

    def names(self) -> list[str]:
        """Every registered name and alias, sorted."""
        return sorted(self._specs)

    def owner(self, name: str) -> str:
        """The plugin that registered ``name``."""
        return self._owners[self.get(name).name]

    def get(self, name: str, *, key: str = "type") -> BackendSpec:
        """The spec for ``name``; ``BackendNotFoundError`` with a suggestion if unknown.

        ``key`` is the config path that named it, quoted in the error.
        """
        try:
            return self._specs[name]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(name), self.names(), n=1)
            raise BackendNotFoundError(
                name, self.names(), close[0] if close else None, key=key
            ) from None

    def create(self, name: str, context: BackendContext) -> Backend:
        """Check the spec's requirements, then build the backend."""
        spec = self.get(name)
        for requirement in spec.requires:
            if importlib.util.find_spec(requirement.module) is None:
                raise MissingDependencyError(spec.name, requirement.module, requirement.install)
        return spec.factory(context)

    def create_sync(self, name: str, context: BackendContext, *, key: str = "type") -> SyncBackend:
        """Like ``create``, for ``meetq.sync``; ``BackendError`` if the backend has no
        sync face."""
        spec = self.get(name, key=key)
        if spec.sync_factory is None:
            raise BackendError(
                f"config {key}={name!r}: backend {spec.name!r} (plugin {self.owner(name)!r}) "
                "offers no sync producer; publish from async code, or use memory or redis",
                backend=spec.name,
            )
        for requirement in spec.requires:
            if importlib.util.find_spec(requirement.module) is None:
                raise MissingDependencyError(spec.name, requirement.module, requirement.install)
        return spec.sync_factory(context)
