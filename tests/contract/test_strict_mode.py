"""The shipped suite as a third party runs it: strict asyncio mode, no conftest, no ini.

A subprocess pytest runs in a directory of its own holding one test file that binds
``ContractSuite`` to the memory backend and to the example plugin (on ``PYTHONPATH``, found
through its entry point). Nothing of this repository's pytest setup applies there: no
``asyncio_mode = "auto"``, no ``pytest_plugins`` line — the fixtures come from meetq's
``pytest11`` entry point — and warnings are errors. The run is started when this test is
collected (``tests/contract/conftest.py``), so it overlaps the rest of the session; the
test waits for it and reads its summary.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import tempfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "plugin_example"
TEST_NAME = "test_the_shipped_suite_passes_in_strict_mode_without_a_conftest"
DEADLINE = 300.0

BINDING = '''\
import pytest

from meetq.testing import ContractSuite


class TestMemory(ContractSuite):
    @pytest.fixture
    def backend_config(self):
        return {"message_queue": {"type": "memory"}, "event_bus": {"type": "memory"}}


class TestExample(ContractSuite):
    @pytest.fixture
    def backend_config(self):
        return {"message_queue": {"type": "example"}, "event_bus": {"type": "example"}}
'''
BINDINGS = 2


class StrictRun:
    """The subprocess pytest, started once per session."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="meetq-strict-")
        project = Path(self._dir.name)
        (project / "test_bound.py").write_text(BINDING)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGIN_DIR), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-rs",
                "-p",
                "no:cacheprovider",
                "-o",
                "asyncio_mode=strict",
                # pytest-asyncio warns when this is unset, and warnings are errors here.
                "-o",
                "asyncio_default_fixture_loop_scope=function",
                "-W",
                "error",
                "--strict-markers",
                "--rootdir",
                str(project),
                str(project),
            ],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def kill(self) -> None:
        self.process.kill()
        self.process.communicate()
        self._dir.cleanup()

    def result(self) -> tuple[int, str]:
        try:
            output, _ = self.process.communicate(timeout=DEADLINE)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.communicate()
            self._dir.cleanup()
        return self.process.returncode, output


_run: StrictRun | None = None


def start() -> StrictRun:
    """Start the strict run (once); ``conftest.py`` calls this at collection."""
    global _run
    if _run is None:
        _run = StrictRun()
    return _run


def stop() -> None:
    """End a run nobody waited for (the session stopped early)."""
    if _run is not None and _run.process.poll() is None:
        _run.kill()


def _suite_size() -> int:
    """How many tests one binding of ``ContractSuite`` collects (parametrized ones counted)."""
    from meetq.testing import ContractSuite

    total = 0
    for name in dir(ContractSuite):
        if not name.startswith("test"):
            continue
        marks = getattr(getattr(ContractSuite, name), "pytestmark", [])
        sizes = [len(m.args[1]) for m in marks if m.name == "parametrize"]
        total += len(list(itertools.product(*(range(n) for n in sizes))))
    return total


def test_meetq_registers_its_pytest_plugin_once_through_pytest11(
    pytestconfig: pytest.Config,
) -> None:
    import meetq.testing.pytest_plugin as plugin_module

    (entry,) = [ep for ep in entry_points(group="pytest11") if ep.name.startswith("meetq")]
    # Named as the module: a leftover `pytest_plugins` line then finds it registered.
    assert entry.name == entry.value == "meetq.testing.pytest_plugin"
    manager = pytestconfig.pluginmanager
    assert manager.get_plugin("meetq.testing.pytest_plugin") is plugin_module
    assert [p for p in manager.get_plugins() if p is plugin_module] == [plugin_module]
    assert any(line.startswith("meetq_requires(") for line in pytestconfig.getini("markers"))


def test_the_shipped_suite_passes_in_strict_mode_without_a_conftest() -> None:
    code, output = start().result()
    assert code == 0, output
    summary = output.strip().splitlines()[-1]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|skipped|failed)", summary)}
    assert counts.get("failed", 0) == 0, output
    assert counts["passed"] + counts.get("skipped", 0) == BINDINGS * _suite_size(), output
    # A skip is only ever a capability the backend does not declare, and says which.
    skips = [line for line in output.splitlines() if line.startswith("SKIPPED")]
    assert sum(int(re.match(r"SKIPPED \[(\d+)\]", s)[1]) for s in skips) == counts.get("skipped", 0)
    assert all("does not declare capability" in line for line in skips), skips
