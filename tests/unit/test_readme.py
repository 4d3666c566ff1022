"""The README's "Use" section runs as printed and prints what it says it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import meetq

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(language: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    use = text[text.index("## Use\n") :]
    use = use[: use.index("\n## ", 1)]
    return re.findall(rf"^```{language}\n(.*?)^```$", use, flags=re.S | re.M)


def test_the_use_snippet_runs_and_prints_the_handlers_output(tmp_path: Path) -> None:
    (snippet,) = _blocks("python")
    (printed,) = _blocks("text")
    assert '"type": "memory"' in snippet  # runs without a server, as the test needs
    done = subprocess.run(
        [sys.executable, "-c", snippet],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout == printed


def test_the_use_yaml_is_a_valid_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (yaml_text,) = _blocks("yaml")
    path = tmp_path / "config.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    monkeypatch.delenv("MEETQ_REDIS_URL", raising=False)
    config = meetq.load_config(path)  # loading only: nothing connects
    assert config.message_queue.type == "redis"
    assert config.message_queue.queue_name == "my_service"
    assert config.message_queue.poll_interval == 0.1
    assert config.event_bus.type == "redis_pubsub"
