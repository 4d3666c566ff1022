"""Every example in docs/guide-mapping.md runs as printed and prints what the page says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "guide-mapping.md"
# A python block, then "Prints:" and the text block it prints.
_EXAMPLE = re.compile(
    r"^### (.+?)\n.*?^```python\n(.*?)^```\n\nPrints:\n\n```text\n(.*?)^```$", re.S | re.M
)


def _examples() -> list[tuple[str, str, str]]:
    text = PAGE.read_text(encoding="utf-8")
    found = [(m[1], m[2], m[3]) for m in _EXAMPLE.finditer(text)]
    # Every python block on the page is one of them: none is left untested.
    assert len(found) == text.count("```python\n")
    return found


EXAMPLES = _examples()


def test_the_page_has_every_example_of_the_guide() -> None:
    # The guide's six components, quick start, config, priorities, errors, monitoring,
    # dead letters.
    assert len(EXAMPLES) == 12


@pytest.mark.parametrize(
    ("code", "printed"), [e[1:] for e in EXAMPLES], ids=[e[0] for e in EXAMPLES]
)
def test_the_example_runs_and_prints_what_the_page_says(
    code: str, printed: str, tmp_path: Path
) -> None:
    assert '"type": "redis' not in code  # memory only: the test starts no server
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONASYNCIODEBUG": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert _without_slow_callback_notes(done.stdout) == printed


def _without_slow_callback_notes(out: str) -> str:
    # PYTHONASYNCIODEBUG=1 logs "Executing <...> took 0.123 seconds" when the machine is
    # busy; an example that logs to stdout would print it among its own lines.
    return "".join(
        line for line in out.splitlines(keepends=True) if not _SLOW_CALLBACK.match(line)
    )


_SLOW_CALLBACK = re.compile(r"(?:\S+ )*Executing <.*> took \d+\.\d+ seconds$")
