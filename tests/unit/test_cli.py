"""The pieces of ``meetq worker`` that need no process of their own: APP loading, the
log formats, and the command without its extra (the processes: tests/integration/
test_cli_worker.py)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from meetq.cli._app import AppError, load_app
from meetq.cli._logging import JsonFormatter, TextFormatter

APP_MODULE = '''
import meetq

CONFIGS = []
# Built at import, as a module may: with no backend sections it needs no backend.
OFF = {s: {"enabled": False} for s in ("message_queue", "event_bus", "task_dispatcher")}
built = meetq.QueueManager(meetq.load_config(OFF), lambda name: None)

async def with_config(config):
    CONFIGS.append(config)
    return await meetq.initialize_queue_system({"message_queue": {"type": "memory"}})

def bare():
    return built

def wrong():
    return 42

class services:
    queue = built

not_callable = 7
'''


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "cli_test_app.py").write_text(APP_MODULE)
    monkeypatch.chdir(tmp_path)  # load_app puts the current directory on sys.path
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "cli_test_app", raising=False)
    return tmp_path


async def test_app_forms(app_dir: Path) -> None:
    qm = await load_app("cli_test_app:with_config", "some.yaml")
    await qm.stop()
    module = sys.modules["cli_test_app"]
    assert module.CONFIGS == ["some.yaml"]
    qm = await load_app("cli_test_app:with_config", None)  # a parameter: None then
    await qm.stop()
    assert module.CONFIGS == ["some.yaml", None]
    assert await load_app("cli_test_app:bare", None) is module.built
    assert await load_app("cli_test_app:built", None) is module.built
    assert await load_app("cli_test_app:services.queue", None) is module.built


@pytest.mark.parametrize(
    ("spec", "config", "says"),
    [
        ("cli_test_app", None, "expected 'module:attribute'"),
        ("cli_test_app:", None, "expected 'module:attribute'"),
        ("no_such_module_here:app", None, "no module 'no_such_module_here'"),
        ("cli_test_app:missing", None, "has no 'missing'"),
        ("cli_test_app:not_callable", None, "is a int: expected a QueueManager"),
        ("cli_test_app:wrong", None, "returned a int: expected a QueueManager"),
        ("cli_test_app:bare", "c.yaml", "takes no parameter, so --config has nowhere to go"),
        ("cli_test_app:built", "c.yaml", "is a QueueManager built already"),
    ],
)
async def test_app_errors_say_what_is_wrong(
    app_dir: Path, spec: str, config: str | None, says: str
) -> None:
    with pytest.raises(AppError) as info:
        await load_app(spec, config)
    assert says in str(info.value)
    assert repr(spec) in str(info.value)


def _record(**extra: object) -> logging.LogRecord:
    logger = logging.getLogger("meetq.test_cli")
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    handler = Keep()
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.error("message %s of %s", "m1", "jobs", exc_info=True, extra=extra)
    finally:
        logger.removeHandler(handler)
    return captured[0]


def test_json_lines_carry_every_extra_field() -> None:
    record = _record(queue="jobs", message_id="m1", type="job", attempt=2, worker="w:1",
                     level="shadowed", obj=object())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "message m1 of jobs"
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "meetq.test_cli"
    assert entry["time"].endswith("Z")
    assert (entry["queue"], entry["message_id"], entry["type"], entry["attempt"],
            entry["worker"]) == ("jobs", "m1", "job", 2, "w:1")
    assert entry["extra_level"] == "shadowed"  # a standard key is never overwritten
    assert entry["obj"].startswith("<object object")  # not JSON: its str()
    assert "ValueError: boom" in entry["exception"]


def test_text_lines_end_with_the_extra_fields_sorted() -> None:
    record = _record(queue="jobs", attempt=2)
    line = TextFormatter().format(record)
    assert line.splitlines()[0].endswith("meetq.test_cli: message m1 of jobs attempt=2 queue=jobs")


def test_without_click_the_command_says_how_to_install_it() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["click"] = None
        import meetq.cli
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr == (
        "meetq: the command line needs click; install it with: pip install 'meetq[cli]'\n"
    )


def test_metrics_port_without_prometheus_client_names_the_install_command() -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        sys.modules["prometheus_client"] = None
        import meetq
        from meetq.cli._app import AppError
        from meetq.cli._run import serve_metrics

        async def main():
            qm = await meetq.initialize_queue_system({"message_queue": {"type": "memory"}})
            try:
                serve_metrics(0, qm)
            except AppError as exc:
                print(exc)
            await qm.stop()

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("--metrics-port: ")
    assert "pip install 'meetq[prometheus]'" in done.stdout
