"""``APP`` of ``meetq worker``: ``module:attribute`` naming a QueueManager or a factory.

Decided rules (docs/cli.md):

- the attribute may be dotted (``pkg.mod:services.queue``); the current directory is
  put first on ``sys.path``, as ``python -m`` would, so a module beside you is found;
- a ``QueueManager`` is used as it is; ``--config`` is refused then (it would be
  ignored);
- a callable (plain or ``async def``, or returning an awaitable) is called and must
  return a ``QueueManager`` with its handlers registered. One that takes a parameter
  is called with the ``--config`` path (``None`` when it was not given); one that takes
  none is called bare, and ``--config`` is refused.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any

from meetq.manager import QueueManager

__all__ = ["AppError", "load_app"]


class AppError(Exception):
    """APP cannot be turned into a QueueManager; the message says why and what to do."""


def _resolve(spec: str) -> Any:
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise AppError(f"APP={spec!r}: expected 'module:attribute', e.g. 'myservice.worker:app'")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise AppError(
                f"APP={spec!r}: no module {exc.name!r} (looked in {cwd} and sys.path)"
            ) from None
        raise  # the module was found and itself imports something missing
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppError(f"APP={spec!r}: module {module_name!r} has no {attribute!r}") from None
    return target


def _takes_a_parameter(func: Any) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: call it bare
        return False
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params
    )


async def load_app(spec: str, config: str | None) -> QueueManager:
    """Import ``spec`` and return its QueueManager (calling and awaiting a factory)."""
    target = _resolve(spec)
    if isinstance(target, QueueManager):
        if config is not None:
            raise AppError(
                f"APP={spec!r} is a QueueManager built already, so --config has nowhere "
                "to go; name a factory that takes the config path instead"
            )
        return target
    if not callable(target):
        raise AppError(
            f"APP={spec!r} is a {type(target).__name__}: expected a QueueManager or a "
            "callable returning one"
        )
    if _takes_a_parameter(target):
        result = target(config)
    elif config is not None:
        raise AppError(
            f"APP={spec!r} takes no parameter, so --config has nowhere to go; give it "
            "one (the config path) or drop --config"
        )
    else:
        result = target()
    if inspect.isawaitable(result):
        result = await result
    if not isinstance(result, QueueManager):
        raise AppError(
            f"APP={spec!r} returned a {type(result).__name__}: expected a QueueManager "
            "(e.g. from meetq.initialize_queue_system) with its handlers registered"
        )
    return result
