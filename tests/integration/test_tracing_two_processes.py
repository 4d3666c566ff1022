"""OpenTelemetry across two processes on real Redis: a producer process's send span and a
consumer process's process span, exported with the SDK's in-memory exporter to JSON; the
process span links to the send span through the message's headers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

SIDE = Path(__file__).with_name("_traced_process.py")


async def _run(role: str, url: str, prefix: str, out: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SIDE),
        role,
        url,
        prefix,
        "traced",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stdout
    kind, _, message_id = stdout.decode().strip().rpartition("\n")[2].partition(" ")
    assert kind == "DONE"
    return message_id


def _spans(path: Path) -> list[dict[str, Any]]:
    spans: list[dict[str, Any]] = json.loads(path.read_text())
    return spans


async def test_process_span_links_to_send_span_across_processes(
    meetq_redis_url: str, meetq_namespace: str, tmp_path: Path
) -> None:
    produced = await _run("produce", meetq_redis_url, meetq_namespace, tmp_path / "send.json")
    consumed = await _run("consume", meetq_redis_url, meetq_namespace, tmp_path / "process.json")
    assert consumed == produced

    [send] = _spans(tmp_path / "send.json")
    [process] = _spans(tmp_path / "process.json")
    assert send["name"] == "send traced" and send["kind"] == "PRODUCER"
    assert process["name"] == "process traced" and process["kind"] == "CONSUMER"
    assert process["links"] == [[send["trace_id"], send["span_id"]]]
    for span, operation in ((send, "send"), (process, "process")):
        attributes = span["attributes"]
        assert attributes["messaging.system"] == "meetq"
        assert attributes["messaging.destination.name"] == "traced"
        assert attributes["messaging.operation.type"] == operation
        assert attributes["messaging.message.id"] == produced
        assert attributes["messaging.meetq.priority"] == "normal"
    assert process["attributes"]["messaging.meetq.attempt"] == 1
    assert process["attributes"]["messaging.meetq.outcome"] == "ack"
