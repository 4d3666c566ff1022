"""The cluster forms of the Lua scripts: every notification is a sharded SPUBLISH."""

from __future__ import annotations

import re

from meetq.backends.redis._scripts import SCRIPTS, SHARDED_SCRIPTS

_CODE_PUBLISH = re.compile(r"\bPUBLISH\b")


def _code(source: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in source.splitlines())


def test_every_publish_of_every_script_is_sharded_in_its_cluster_form() -> None:
    assert set(SHARDED_SCRIPTS) == set(SCRIPTS)
    published = set()
    for name, script in SCRIPTS.items():
        plain, sharded = _code(script.source), _code(SHARDED_SCRIPTS[name].source)
        assert _CODE_PUBLISH.findall(sharded) == [], name
        assert sharded.count("SPUBLISH") == len(_CODE_PUBLISH.findall(plain)), name
        assert sharded.replace("SPUBLISH", "PUBLISH") == plain  # nothing else differs
        if "SPUBLISH" in sharded:
            published.add(name)
        assert (SHARDED_SCRIPTS[name].sha == script.sha) == (name not in published)
    # The wake-ups and the hand-off: if one of these stops publishing, look again.
    assert {"enqueue", "enqueue_one", "exchange", "requeue"} <= published
