"""The import rules of meetq's layers, and no import cycles (docs/architecture.md).

Every ``import`` in the package counts: top-level, function-local and the ones under
``if TYPE_CHECKING:``, since a type-only cycle is still two modules that cannot be
understood apart.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import meetq

ROOT = Path(meetq.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str) -> Iterator[str]:
    """Every meetq module ``name`` imports (``from pkg import mod`` names the module)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "meetq":
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.split(".")[0] != "meetq":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield sub if sub in MODULES else target


GRAPH = {name: sorted(set(_imports(name)) - {name}) for name in MODULES}


def _layer(name: str) -> str:
    if name == "meetq":
        return "face"
    top = name.split(".")[1]
    return {
        "core": "kernel",
        "plugins": "kernel",
        "backend": "backend-face",
        "backends": "backend",
        "queue": "component",
        "broadcast": "component",
        "inprocess": "component",
        "dispatch": "dispatch",
        "manager": "manager",
        "observability": "observability",
        "sync": "sync",
        "testing": "testing",
        "cli": "command",
        "__main__": "command",
    }.get(top, "other")


def _allowed(importer: str, imported: str) -> bool:
    src, dst = _layer(importer), _layer(imported)
    if src == "kernel":
        return dst == "kernel"
    if src == "backend-face":
        return dst == "kernel"
    if src == "backend":
        # Its own package, the backend face, the kernel; no other backend, no component.
        own = ".".join(importer.split(".")[:3])
        return dst in ("kernel", "backend-face") or imported.startswith(own + ".") or (
            imported == own
        )
    if src == "component":
        own = ".".join(importer.split(".")[:2])
        return dst == "kernel" or imported == own or imported.startswith(own + ".")
    if src == "dispatch":
        return dst in ("kernel", "component", "dispatch")
    if src == "manager":
        # The manager registers the built-in backends by their plugin object only.
        if dst == "backend":
            return imported.count(".") == 2
        return dst in ("kernel", "component", "dispatch", "manager")
    if src == "observability":
        # Built on the public components (their middleware and stats), never a backend.
        return dst in ("kernel", "component", "dispatch", "manager", "observability")
    if src == "sync":
        # The blocking producer: the kernel's rules, and the registry the manager builds;
        # backends only through their sync_factory, no async component.
        return dst == "kernel" or imported == "meetq.manager" or imported.startswith("meetq.sync")
    if src == "command":
        # The top: the command may use every layer's public face, never a backend's
        # insides (only through the registry, as a user's config picks one) nor testing.
        return dst not in ("backend", "testing")
    if dst == "command":
        return False  # nothing in the package depends on the command line
    if src == "testing":
        # Through the public API, as a user's test would: never a backend module.
        return dst not in ("backend", "manager") or imported == "meetq.manager"
    return True


def test_every_module_is_in_a_layer() -> None:
    assert [name for name in MODULES if _layer(name) == "other"] == []


@pytest.mark.parametrize("importer", sorted(MODULES))
def test_imports_point_down(importer: str) -> None:
    wrong = [imported for imported in GRAPH[importer] if not _allowed(importer, imported)]
    assert wrong == [], f"{importer} ({_layer(importer)}) must not import {wrong}"


def test_no_import_cycles() -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for dep in GRAPH.get(name, []):
            # A package's own re-export face importing its submodules is not a cycle.
            if dep not in MODULES:
                continue
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[name] = 2

    for name in MODULES:
        if name not in state:
            visit(name)
    assert cycles == []
