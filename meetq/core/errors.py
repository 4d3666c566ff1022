"""Every error meetq raises, in one tree.

::

    MeetqError
    ├── ConfigError              a config key is unknown, mistyped or out of range (.key, .value)
    ├── ValidationError          a public call got a bad argument (.field, .value)
    │   └── SerializationError   a payload cannot be encoded (.field, .value)
    ├── PluginError              a plugin misbehaved, e.g. registered a taken backend name
    ├── BackendError             something went wrong in or with a backend (.backend)
    │   ├── BackendNotFoundError    ``type:`` names no registered backend (.available)
    │   ├── MissingDependencyError  the backend's driver is not installed (.install)
    │   ├── BackendUnavailableError the backend cannot be reached right now
    │   │   └── BackendAccessDeniedError  it refused this client: credentials or ACL rights
    │   └── TrackingUnsupported     the backend cannot look messages up by id (no ``tracking``)
    ├── ClosedError              the component was stopped and takes no more work
    ├── QueueFull                a bounded buffer is full and the policy says raise
    ├── ResultError              ``result(id)`` has no value to give (.message_id, .state)
    └── HandlerTimeout           a handler ran past its timeout (recorded, never raised to callers)

Errors carry their subject as attributes and say what to do in their message.
"""

from __future__ import annotations

from typing import Any

from meetq.core._show import show_field as _name
from meetq.core._show import show_value as _show

__all__ = [
    "BackendAccessDeniedError",
    "BackendError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "ClosedError",
    "ConfigError",
    "HandlerTimeout",
    "MeetqError",
    "MissingDependencyError",
    "PluginError",
    "QueueFull",
    "ResultError",
    "SerializationError",
    "TrackingUnsupported",
    "ValidationError",
]


class MeetqError(Exception):
    """Base of every error meetq raises on purpose."""


class ConfigError(MeetqError):
    """A configuration key is unknown, has the wrong type or an impossible value.

    ``key`` is the dotted path (``message_queue.workers``); ``value`` is what was given.
    """

    def __init__(self, key: str, value: Any, problem: str) -> None:
        self.key = key
        self.value = value
        self.problem = problem
        super().__init__(f"config {_name(key)}={_show(value)}: {problem}")


class ValidationError(MeetqError):
    """A public entry point was given a bad argument; nothing was stored or started."""

    def __init__(self, field: str, value: Any, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{_name(field)}={_show(value)}: {problem}")


class SerializationError(ValidationError):
    """A payload (or header) cannot be encoded by the configured serializer."""


class PluginError(MeetqError):
    """A plugin broke a registration rule (for example a duplicate backend name)."""


class BackendError(MeetqError):
    """A backend failed; ``backend`` names it."""

    def __init__(self, message: str, *, backend: str) -> None:
        self.backend = backend
        super().__init__(message)


class BackendNotFoundError(BackendError):
    """The configured ``type:`` is not a registered backend."""

    def __init__(
        self, name: str, available: list[str], suggestion: str | None, *, key: str = "type"
    ) -> None:
        self.available = available
        self.key = key
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        listing = ", ".join(repr(n) for n in available) or "none"
        super().__init__(
            f"config {key}={name!r}: no backend of that name (available: {listing}).{hint}",
            backend=name,
        )


class MissingDependencyError(BackendError):
    """The selected backend (or an optional feature, ``feature``) needs a package that is
    not installed."""

    def __init__(self, backend: str, package: str, install: str, *, feature: str = "") -> None:
        self.package = package
        self.install = install
        subject = feature or f"backend {backend!r}"
        super().__init__(
            f"{subject} needs the {package!r} package, which is not installed; "
            f"install it with: {install}",
            backend=backend,
        )


class BackendUnavailableError(BackendError):
    """The backend could not be reached or answered with an error."""


class BackendAccessDeniedError(BackendUnavailableError):
    """The backend refused this client: no or wrong credentials (authentication), or an
    ACL that does not grant a command, key or channel it needs (``.reason`` is
    ``"authentication"`` or ``"permission"``). Retrying does not help until the
    credentials or the user's rights are fixed; the message says which key to look at.
    """

    def __init__(self, message: str, *, backend: str, reason: str) -> None:
        self.reason = reason
        super().__init__(message, backend=backend)


class TrackingUnsupported(BackendError):
    """The backend under a queue does not declare the ``tracking`` capability, so
    ``status``, ``result``, ``cancel`` and progress reports are not available on it."""

    def __init__(self, backend: str, call: str) -> None:
        super().__init__(
            f"{call}: backend {backend!r} does not declare the 'tracking' capability; "
            "status, result, cancel and progress need a backend that does (memory, redis)",
            backend=backend,
        )


class ResultError(MeetqError):
    """``result(id)`` has no return value to give: results are off (``result_ttl``), the
    message ended dead or cancelled, is unknown, or did not finish in time.
    ``message_id`` and ``state`` say which; ``error`` is its last error, if any."""

    def __init__(self, message_id: str, state: str, problem: str, error: str = "") -> None:
        self.message_id = message_id
        self.state = state
        self.error = error
        super().__init__(f"result of message {message_id!r}: {problem}")


class ClosedError(MeetqError):
    """The component has been stopped; start a new one to continue."""


class QueueFull(MeetqError):
    """A bounded buffer is full and its overflow policy is ``raise``."""

    def __init__(self, message: str, *, capacity: int) -> None:
        self.capacity = capacity
        super().__init__(message)


class HandlerTimeout(MeetqError):
    """A handler ran longer than its timeout and was cancelled."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(f"handler did not finish within {timeout:g}s and was cancelled")
