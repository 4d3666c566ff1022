"""``meetq stats``, ``dlq``, ``queue``, ``publish`` and ``check`` on a real redis-server.

The commands that start a process of their own for a user (``stats --json``,
``publish``, ``check``) run as real subprocesses; the dead-letter and purge commands run
in-process through click's ``CliRunner`` (the same code, but their chunking can be made
small enough to see). Every figure the commands print is checked against the public
inspection API on the same queue.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import meetq
from meetq import Message, Priority
from meetq.cli import _admin, main
from meetq.testing import QUICK, RedisServer, eventually, free_port

BOUND = 30.0  # seconds a subprocess may take before the test fails


@pytest.fixture
def config(tmp_path: Path, meetq_redis_url: str, meetq_namespace: str) -> Path:
    return _write_config(tmp_path, meetq_redis_url, meetq_namespace)


def _write_config(tmp_path: Path, url: str, prefix: str) -> Path:
    path = tmp_path / "meetq.yaml"
    section = {"type": "redis", "queue_name": "jobs", **QUICK}
    path.write_text(
        yaml.safe_dump(
            {"message_queue": section, "redis": {"url": url, "key_prefix": prefix}}
        )
    )
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m meetq ARGS`` in a process of its own, with no MEETQ_* overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEETQ_")}
    return subprocess.run(
        [sys.executable, "-m", "meetq", *args],
        capture_output=True,
        text=True,
        timeout=BOUND,
        env=env,
        check=False,
    )


def _invoke(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def _on_queue(config: Path, action: Any) -> Any:
    """Run ``action(mq)`` on the config's queue from this process (the test's own view)."""

    async def run() -> Any:
        qm = await meetq.initialize_queue_system(config)
        try:
            mq = qm.get_message_queue()
            assert mq is not None
            return await action(mq)
        finally:
            await qm.stop()

    return asyncio.run(run())


def _dead_letter(config: Path, types: list[str]) -> list[str]:
    """One message per entry of ``types``, each dead-lettered by a failing handler."""

    async def make(mq: meetq.MessageQueue) -> list[str]:
        for t in sorted(set(types)):

            @mq.handler(t)
            async def fail(msg: Message) -> None:
                raise ValueError(f"cannot handle {msg.id}")

        ids = [await mq.publish(Message(type=t, max_retries=0)) for t in types]
        async with mq:
            await eventually(lambda: _dead_is(mq, len(types)))
        return ids

    ids: list[str] = _on_queue(config, make)
    return ids


async def _dead_is(mq: meetq.MessageQueue, count: int) -> bool:
    return await mq.dead_letter_count() == count


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    # Several chunks (and the progress bar) without thousands of messages.
    monkeypatch.setattr(_admin, "CHUNK", 3)
    yield 3


def test_stats_json_parses_and_matches_the_api(config: Path) -> None:
    async def publish(mq: meetq.MessageQueue) -> None:
        await mq.publish(Message(type="job", priority=Priority.HIGH))
        await mq.publish(Message(type="job", priority=Priority.HIGH))
        await mq.publish(Message(type="job", priority=Priority.LOW), delay=600)

    _on_queue(config, publish)
    done = _cli("stats", "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)

    async def look(mq: meetq.MessageQueue) -> dict[str, Any]:
        return (await mq.inspect()).to_dict()

    api = _on_queue(config, look)
    # The two high ones wait on: they have aged between the command and the API call.
    assert 0 < shown["jobs"].pop("oldest_age") <= api.pop("oldest_age")
    assert shown == {"jobs": api}
    assert shown["jobs"]["waiting"] == {"critical": 0, "high": 2, "normal": 0, "low": 1}
    assert (shown["jobs"]["delayed"], shown["jobs"]["totals"]["published"]) == (1, 3)
    # The text form shows the same figures.
    text = _cli("stats", "--config", str(config))
    assert text.returncode == 0, text.stderr
    assert "waiting    3 (critical 0, high 2, normal 0, low 1)" in text.stdout
    assert "s waiting" in text.stdout.split("oldest", 1)[1].splitlines()[0]
    # --watch with --count: one JSON object a line, then exit 0.
    watched = _cli("stats", "--config", str(config), "--json", "--watch", "0.1", "--count", "2")
    assert watched.returncode == 0, watched.stderr
    looks = [json.loads(line) for line in watched.stdout.splitlines()]
    ages = [look["jobs"].pop("oldest_age") for look in looks]
    assert looks == [shown, shown] and ages[0] <= ages[1]


def test_publish_then_stats_and_length_show_it(config: Path) -> None:
    sent = _cli(
        "publish", "report", "--payload", '{"n": 1}', "--priority", "high",
        "--delay", "10m", "--config", str(config),
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    message_id = sent.stdout.strip()
    assert len(message_id) == 32
    shown = json.loads(_cli("stats", "--config", str(config), "--json").stdout)["jobs"]
    assert shown["waiting"]["high"] == 1
    assert (shown["delayed"], shown["totals"]["published"]) == (1, 1)
    length = _cli("queue", "length", "--config", str(config), "--priority", "high")
    assert (length.returncode, length.stdout.strip()) == (0, "1")
    # Bad input is a usage error (2) that names the option, and publishes nothing.
    bad = _cli("publish", "report", "--payload", "[1]", "--config", str(config))
    assert bad.returncode == 2 and "--payload" in bad.stderr
    bad = _cli("publish", "report", "--delay", "soon", "--config", str(config))
    assert bad.returncode == 2 and "--delay" in bad.stderr
    assert _on_queue(config, lambda mq: mq.queue_length()) == 1


def test_check_exits_nonzero_against_a_dead_redis_and_zero_against_a_live_one(
    config: Path, tmp_path: Path, meetq_namespace: str
) -> None:
    live = _cli("check", "--config", str(config))
    assert live.returncode == 0, live.stderr
    assert live.stdout.startswith("ok: queue 'jobs' on redis answered in")
    dead_dir = tmp_path / "dead"
    dead_dir.mkdir()
    # A loopback port nothing listens on: the connection is refused.
    dead = _write_config(dead_dir, f"redis://127.0.0.1:{free_port()}/0", meetq_namespace)
    began = time.monotonic()
    down = _cli("check", "--config", str(dead), "--timeout", "3")
    assert down.returncode == 1, down.stdout
    assert down.stderr.startswith("meetq: ")
    assert time.monotonic() - began < BOUND


def test_check_ends_within_its_timeout_against_a_frozen_redis(
    tmp_path: Path, meetq_redis_server: RedisServer, meetq_namespace: str
) -> None:
    # SIGSTOP: the port accepts connections and nothing ever answers.
    config = _write_config(tmp_path, meetq_redis_server.url, meetq_namespace)
    assert _cli("check", "--config", str(config)).returncode == 0
    meetq_redis_server.freeze()
    try:
        began = time.monotonic()
        frozen = _cli("check", "--config", str(config), "--timeout", "1")
        took = time.monotonic() - began
    finally:
        meetq_redis_server.thaw()
    assert frozen.returncode == 1, frozen.stdout
    assert "meetq: " in frozen.stderr
    # The probe's own bound, plus start-up and closing the client (no fixed sleep):
    # far below redis.socket_timeout's 5 s twice over.
    assert took < BOUND


def test_dlq_requeue_max_moves_exactly_five(config: Path, small_chunks: int) -> None:
    ids = _dead_letter(config, ["job"] * 12)
    result = _invoke("dlq", "requeue", "--max", "5", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "requeued 5 dead letters in queue 'jobs'" in result.output

    async def look(mq: meetq.MessageQueue) -> tuple[int, list[str]]:
        return await mq.queue_length(), [d.id for d in await mq.dead_letters()]

    assert _on_queue(config, look) == (5, ids[5:])  # the five oldest moved


def test_dlq_requeue_type_filter(config: Path, small_chunks: int) -> None:
    ids = _dead_letter(config, ["a", "b", "a", "b", "b", "a", "b", "b"])
    result = _invoke("dlq", "requeue", "--type", "b", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "requeued 5 dead letters" in result.output

    async def look(mq: meetq.MessageQueue) -> tuple[int, list[str]]:
        return await mq.queue_length(), [d.id for d in await mq.dead_letters()]

    assert _on_queue(config, look) == (5, [ids[0], ids[2], ids[5]])


def test_dlq_list_and_show_carry_error_and_traceback_summary(config: Path) -> None:
    first, _ = _dead_letter(config, ["job", "job"])
    listed = _invoke("dlq", "list", "--config", str(config))
    assert listed.exit_code == 0, listed.output
    assert f"{first}  job  attempts 1" in listed.output
    assert f"    error: ValueError: cannot handle {first}" in listed.output
    assert '    at:    File "' in listed.output
    assert "2 of 2 dead letters in queue 'jobs'" in listed.output
    rows = [
        json.loads(line)
        for line in _invoke("dlq", "list", "--json", "--config", str(config)).output.splitlines()
    ]
    assert [r["id"] for r in rows][:1] == [first]
    assert rows[0]["traceback_summary"].endswith(f"ValueError: cannot handle {first}")
    shown = _invoke("dlq", "show", first, "--config", str(config))
    assert shown.exit_code == 0, shown.output
    assert "Traceback (most recent call last)" in shown.output
    assert '"type": "job"' in shown.output
    missing = _invoke("dlq", "show", "no-such-id", "--config", str(config))
    assert missing.exit_code == 1
    assert "no dead letter with id 'no-such-id'" in missing.output


def test_purges_leave_the_queue_empty(config: Path, small_chunks: int) -> None:
    _dead_letter(config, ["job"] * 7)
    refused = _invoke("dlq", "purge", "--config", str(config), input="n\n")
    assert refused.exit_code == 1
    assert _on_queue(config, lambda mq: mq.dead_letter_count()) == 7
    purged = _invoke("dlq", "purge", "--yes", "--config", str(config))
    assert purged.exit_code == 0, purged.output
    assert "removed 7 dead letters from queue 'jobs'" in purged.output
    assert "purging" in purged.stderr  # more than one chunk: the progress bar ran

    async def fill(mq: meetq.MessageQueue) -> None:
        await mq.publish_batch([Message(type="idle") for _ in range(8)])
        await mq.publish(Message(type="idle"), delay=600)

    _on_queue(config, fill)
    cleared = _invoke("queue", "purge", "-y", "--config", str(config))
    assert cleared.exit_code == 0, cleared.output
    assert "removed 9 waiting messages from queue 'jobs'" in cleared.output

    async def look(mq: meetq.MessageQueue) -> tuple[int, int, int]:
        info = await mq.inspect()
        return info.waiting_total, info.delayed, info.dead

    assert _on_queue(config, look) == (0, 0, 0)


def test_commands_name_a_bad_config_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"message_queue": {"type": "memory", "workers": "four"}}))
    result = _invoke("stats", "--config", str(path))
    assert result.exit_code == 2
    assert "message_queue.workers='four'" in result.output


def test_on_memory_each_command_sees_a_fresh_queue(tmp_path: Path) -> None:
    # Memory lives in one process: a command reads what it made itself, here nothing.
    path = tmp_path / "memory.yaml"
    path.write_text(yaml.safe_dump({"message_queue": {"type": "memory", "queue_name": "m"}}))
    checked = _invoke("check", "--config", str(path))
    assert checked.exit_code == 0, checked.output
    assert checked.output.startswith("ok: queue 'm' on memory")
    shown = json.loads(_invoke("stats", "--json", "--config", str(path)).output)
    assert shown["m"]["waiting_total"] == 0 and shown["m"]["backend"] == "memory"
    disabled = tmp_path / "off.yaml"
    off = {"message_queue": {"enabled": False}, "task_dispatcher": {"enabled": False}}
    disabled.write_text(yaml.safe_dump(off))
    result = _invoke("queue", "length", "--config", str(disabled))
    assert result.exit_code == 2 and "message_queue.enabled is false" in result.output
