"""docs/deployment.md lists the ACL rights meetq needs; this holds the list to the code.

Every command a Lua script or the Redis backend's Python sends must be granted by the
documented ``ACL SETUSER`` line (the line tests/integration/test_redis_tls_acl.py runs
the whole contract suite under), so a script that starts calling a new command fails
here, naming it, instead of in a least-privileged deployment.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
REDIS = ROOT / "meetq" / "backends" / "redis"
# Upper-case words in the scripts that are arguments, not commands.
_ARGUMENTS = frozenset({"GT", "LT", "NX", "XX", "CH", "LIMIT", "WITHSCORES", "BYSCORE", "REV"})


def documented_commands() -> set[str]:
    text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    [line] = [line for line in text.splitlines() if line.startswith("ACL SETUSER meetq-app ")]
    return {word[1:].upper() for word in line.split() if word.startswith("+")}


def script_commands() -> set[str]:
    found: set[str] = set()
    for path in sorted((REDIS / "lua").glob("*.lua")):
        code = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
        found.update(re.findall(r"""['"]([A-Z][A-Z]+)['"]""", code))
    return found - _ARGUMENTS


def client_commands() -> set[str]:
    found: set[str] = set()
    for path in sorted(REDIS.glob("*.py")):
        for name, sub in re.findall(
            r'execute_command\(\s*"([A-Z]+)"(?:,\s*"([A-Z]+)")?', path.read_text()
        ):
            found.add(f"{name}|{sub}" if name == "SCRIPT" else name)
    return found


def test_the_scripts_find_some_commands() -> None:
    # The scan itself works: the commands every queue operation uses are seen.
    assert {"ZADD", "HSET", "PUBLISH", "TIME"} <= script_commands()
    assert {"EVALSHA", "SUBSCRIBE", "PSUBSCRIBE", "PING"} <= client_commands()


def test_every_command_meetq_sends_is_in_the_documented_acl() -> None:
    missing = (script_commands() | client_commands()) - documented_commands()
    assert not missing, (
        f"docs/deployment.md's ACL SETUSER line lacks {sorted(missing)}: add them there "
        "(and to the command list beside it)"
    )
