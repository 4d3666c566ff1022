"""``meetq worker`` as real subprocesses on a real redis-server (docs/cli.md).

The APP is tests/integration/_cli_app.py: its handler writes to Redis lists the test
polls with a bound, and holds until the test sets a gate key, so every step waits on a
condition (a list's length, a log event, a process exit), never on a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
import yaml

import meetq
from meetq import Message
from meetq.testing import eventually, free_port

HERE = Path(__file__).parent
APP = "_cli_app:build"
BOUND = 30.0  # seconds any one condition may take before the test fails


class Worker:
    """A ``meetq worker`` process; its stderr (the logs) is read as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process, json_logs: bool) -> None:
        self.proc = proc
        self.json_logs = json_logs
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode().rstrip("\n"))

    @property
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == name]

    async def wait_event(self, name: str, count: int = 1) -> list[dict[str, Any]]:
        await eventually(lambda: len(self.events(name)) >= count, timeout=BOUND)
        return self.events(name)

    async def exit_status(self) -> int:
        try:
            status = await asyncio.wait_for(self.proc.wait(), BOUND)
        except TimeoutError:
            # Say who hangs: Process.wait() also waits for the children sharing stderr.
            tail = "\n".join(self.lines[-40:])
            raise AssertionError(
                f"pid {self.proc.pid} (or a child holding its stderr) still runs after "
                f"{BOUND:g}s; its last log lines:\n{tail}"
            ) from None
        await asyncio.wait_for(self._reader, BOUND)
        return status

    async def stderr_closed(self) -> None:
        """Every process holding the stderr pipe (the supervisor and its children, who
        share it) has exited: the reader saw end of file."""
        await asyncio.wait_for(self._reader, BOUND)

    def child_events(self, name: str, pid: int) -> list[dict[str, Any]]:
        return [r for r in self.events(name) if r.get("pid") == pid]

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)


@pytest.fixture
def config_path(tmp_path: Path, meetq_redis_url: str, meetq_namespace: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "redis": {"url": meetq_redis_url, "key_prefix": meetq_namespace},
                "message_queue": {
                    "type": "redis",
                    "queue_name": "jobs",
                    "workers": 3,
                    "visibility_timeout": "1s",
                    "poll_interval": "50ms",
                },
                "event_bus": {"enabled": False},
            }
        )
    )
    return path


@pytest.fixture
async def client(meetq_redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    c = redis.asyncio.Redis.from_url(meetq_redis_url, decode_responses=True)
    yield c
    await c.aclose()


@pytest.fixture
async def mq(config_path: Path) -> AsyncIterator[meetq.MessageQueue]:
    qm = await meetq.initialize_queue_system(config_path)
    queue = qm.get_message_queue()
    assert queue is not None
    yield queue  # publishing and inspecting only: never started, consumes nothing
    await qm.stop()


@pytest.fixture
def spawn(config_path: Path) -> Callable[..., Any]:
    started: list[Worker] = []

    async def run(*options: str, json_logs: bool = True, app: str = APP) -> Worker:
        args = [sys.executable, "-m", "meetq", "worker", app, "--config", str(config_path)]
        if json_logs:
            args += ["--log-format", "json"]
        proc = await asyncio.create_subprocess_exec(
            *args,
            *options,
            cwd=HERE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        worker = Worker(proc, json_logs)
        started.append(worker)
        return worker

    yield run
    for worker in started:  # a failed test leaves no process behind
        if worker.proc.returncode is None:
            worker.proc.kill()


async def _records(client: redis.asyncio.Redis, ns: str, name: str) -> list[tuple[str, int, int]]:
    rows = await client.lrange(f"{ns}:{name}", 0, -1)
    return [(i, int(a), int(p)) for i, a, p in (row.split() for row in rows)]


async def _wait_len(client: redis.asyncio.Redis, ns: str, name: str, n: int) -> None:
    async def reached() -> bool:
        return int(await client.llen(f"{ns}:{name}")) >= n

    await eventually(reached, timeout=BOUND)


def _jobs(n: int, *, hold: bool) -> list[Message]:
    return [Message(type="job", payload={"i": i, "hold": hold}) for i in range(n)]


async def test_help_of_the_console_script_and_of_python_dash_m() -> None:
    script = Path(sys.executable).with_name("meetq")
    for args in ([str(script), "--help"], [sys.executable, "-m", "meetq", "--help"]):
        proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        assert "worker" in out.decode()
    proc = await asyncio.create_subprocess_exec(
        str(script), "worker", "--help", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    for option in ("--config", "--processes", "--burst", "--grace", "--metrics-port",
                   "--log-format", "--log-level"):
        assert option in out.decode()


async def test_worker_drains_messages_and_a_sigterm_stops_it_with_status_0(
    spawn: Any, mq: meetq.MessageQueue, client: redis.asyncio.Redis, meetq_namespace: str
) -> None:
    ids = set(await mq.publish_batch(_jobs(20, hold=False)))
    worker = await spawn()
    await _wait_len(client, meetq_namespace, "done", 20)
    await eventually(lambda: _settled(mq, 20), timeout=BOUND)
    worker.signal(signal.SIGTERM)
    assert await worker.exit_status() == 0
    done = await _records(client, meetq_namespace, "done")
    assert sorted(i for i, _, _ in done) == sorted(ids)  # each exactly once
    assert {a for _, a, _ in done} == {1}
    # Every line is one JSON object; the worker's own steps are events in them.
    records = worker.records
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert [r["event"] for r in records if r.get("logger") == "meetq.cli"] == [
        "started",
        "draining",
        "stopped",
    ]


async def _settled(mq: meetq.MessageQueue, processed: int) -> bool:
    stats = await mq.stats()
    return bool(stats["total_processed"] == processed and stats["processing_count"] == 0)


async def test_sigterm_while_handlers_run_lets_them_finish_then_burst_drains_the_rest(
    spawn: Any, mq: meetq.MessageQueue, client: redis.asyncio.Redis, meetq_namespace: str
) -> None:
    ids = set(await mq.publish_batch(_jobs(8, hold=True)))
    worker = await spawn()
    await _wait_len(client, meetq_namespace, "started", 3)  # workers: 3
    worker.signal(signal.SIGTERM)
    await worker.wait_event("draining")
    await client.set(f"{meetq_namespace}:gate", 1)  # only now may the handlers finish
    assert await worker.exit_status() == 0
    first = await _records(client, meetq_namespace, "done")
    assert len(first) == 3
    assert await mq.queue_length() == 5  # no claim after the signal
    assert await mq.processing_count() == 0

    rest = await spawn("--burst")
    assert await rest.exit_status() == 0
    assert rest.events("burst_done")
    done = await _records(client, meetq_namespace, "done")
    assert sorted(i for i, _, _ in done) == sorted(ids)  # every message exactly once
    assert {a for _, a, _ in done} == {1}
    stats = await mq.stats()
    assert (stats["total_processed"], stats["total_retried"], stats["queue_length"]["total"]) == (
        8,
        0,
        0,
    )


async def test_handlers_past_the_grace_go_back_uncharged(
    spawn: Any, mq: meetq.MessageQueue, client: redis.asyncio.Redis, meetq_namespace: str
) -> None:
    ids = set(await mq.publish_batch(_jobs(2, hold=True)))
    worker = await spawn("--grace", "0.2")
    await _wait_len(client, meetq_namespace, "started", 2)
    worker.signal(signal.SIGTERM)
    assert await worker.exit_status() == 0  # the gate stays shut: the grace ran out
    assert await client.llen(f"{meetq_namespace}:done") == 0
    assert await mq.queue_length() == 2  # released at once, not after the lease
    assert await mq.processing_count() == 0

    await client.set(f"{meetq_namespace}:gate", 1)
    rest = await spawn("--burst")
    assert await rest.exit_status() == 0
    done = await _records(client, meetq_namespace, "done")
    assert sorted(i for i, _, _ in done) == sorted(ids)
    assert {a for _, a, _ in done} == {1}  # the cut-short attempt was not charged


async def test_a_second_sigterm_stops_at_once_with_a_non_zero_status(
    spawn: Any, mq: meetq.MessageQueue, client: redis.asyncio.Redis, meetq_namespace: str
) -> None:
    await mq.publish(Message(type="job", payload={"hold": True}))
    worker = await spawn("--grace", "600")
    await _wait_len(client, meetq_namespace, "started", 1)
    worker.signal(signal.SIGTERM)
    await worker.wait_event("draining")
    worker.signal(signal.SIGTERM)
    assert await worker.exit_status() == 128 + signal.SIGTERM
    assert worker.events("stopping_now")
    assert await client.llen(f"{meetq_namespace}:done") == 0


async def test_ctrl_c_drains_without_a_traceback(spawn: Any) -> None:
    worker = await spawn(json_logs=False)
    await eventually(lambda: any("worker started" in line for line in worker.lines), BOUND)
    worker.signal(signal.SIGINT)
    assert await worker.exit_status() == 0
    text = "\n".join(worker.lines)
    assert "SIGINT received: draining" in text
    assert "Traceback" not in text
    assert "KeyboardInterrupt" not in text


async def test_burst_on_an_empty_queue_exits_0(spawn: Any, mq: meetq.MessageQueue) -> None:
    await mq.publish(Message(type="other"))  # no handler for it in APP: not ready for it
    await mq.publish(Message(type="job"), delay=600)  # not due
    worker = await spawn("--burst")
    assert await worker.exit_status() == 0
    assert worker.events("burst_done")
    assert await mq.queue_length() == 2


async def test_processes_3_replaces_a_sigkilled_child_and_loses_nothing(
    spawn: Any, mq: meetq.MessageQueue, client: redis.asyncio.Redis, meetq_namespace: str
) -> None:
    ids = set(await mq.publish_batch(_jobs(9, hold=True)))
    supervisor = await spawn("--processes", "3")
    first = await supervisor.wait_event("worker_started", 3)
    children = {r["worker_index"]: r["child_pid"] for r in first}
    assert sorted(children) == [0, 1, 2]
    await _wait_len(client, meetq_namespace, "started", 9)  # 3 children x 3 workers
    victim = (await _records(client, meetq_namespace, "started"))[0][2]
    assert victim in children.values()
    os.kill(victim, signal.SIGKILL)
    restarted = (await supervisor.wait_event("worker_started", 4))[3]
    assert restarted["child_pid"] not in children.values()
    assert children[restarted["worker_index"]] == victim
    # The victim's three come back when their lease runs out; then all may finish.
    await client.set(f"{meetq_namespace}:gate", 1)
    await eventually(lambda: _settled(mq, 9), timeout=BOUND)
    live = {*children.values(), restarted["child_pid"]} - {victim}
    assert all(_alive(pid) for pid in live)

    supervisor.signal(signal.SIGTERM)
    assert await supervisor.exit_status() == 0
    done = await _records(client, meetq_namespace, "done")
    assert sorted(set(i for i, _, _ in done)) == sorted(ids)  # nothing lost
    redone = {i for i, a, _ in done if a == 2}
    killed = {i for i, _, p in await _records(client, meetq_namespace, "started") if p == victim}
    assert redone == killed  # only the killed child's messages ran twice
    exits = supervisor.events("worker_exited")
    assert sorted(r["child_pid"] for r in exits if r["exit_status"] == 0) == sorted(live)
    assert not any(_alive(pid) for pid in live)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_bad_app_exits_2_with_a_message(spawn: Any) -> None:
    missing = await spawn(app="no_such_module:build", json_logs=False)
    assert await missing.exit_status() == 2
    assert "no module 'no_such_module'" in "\n".join(missing.lines)
    refused = await spawn(app="_cli_app:no_parameter", json_logs=False)
    assert await refused.exit_status() == 2
    assert "takes no parameter, so --config has nowhere to go" in "\n".join(refused.lines)


async def test_metrics_port_serves_what_the_worker_processed(
    spawn: Any, mq: meetq.MessageQueue, client: redis.asyncio.Redis, meetq_namespace: str
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    await mq.publish_batch(_jobs(4, hold=False))
    worker = await spawn("--metrics-port", str(port))
    await worker.wait_event("metrics")
    await _wait_len(client, meetq_namespace, "done", 4)

    def processed() -> float:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "meetq_messages_processed_total"
            and sample.labels.get("outcome") == "ack"
        )

    # The settlement is counted when it is applied, a moment after the handler's end.
    await eventually(lambda: processed() == 4, timeout=BOUND)
    worker.signal(signal.SIGTERM)
    assert await worker.exit_status() == 0


async def test_the_supervisor_does_not_restart_a_child_that_cannot_run(spawn: Any) -> None:
    supervisor = await spawn("--processes", "2", app="no_such_module:build")
    assert await supervisor.exit_status() == 2  # exit 2 would repeat: not retried
    assert not supervisor.events("worker_restarting")
    assert len(supervisor.events("worker_started")) == 2



async def test_a_second_signal_stops_the_supervisor_and_its_children_at_once(
    spawn: Any, mq: meetq.MessageQueue, client: redis.asyncio.Redis, meetq_namespace: str
) -> None:
    await mq.publish_batch(_jobs(6, hold=True))
    supervisor = await spawn("--processes", "2", "--grace", "600")
    children = [r["child_pid"] for r in await supervisor.wait_event("worker_started", 2)]
    # 2 children x 3 workers: every child holds three handlers, so each drain is long.
    await _wait_len(client, meetq_namespace, "started", 6)
    supervisor.signal(signal.SIGTERM)
    await supervisor.wait_event("draining", 3)  # the supervisor's and each child's
    assert all(supervisor.child_events("draining", pid) for pid in children)
    supervisor.signal(signal.SIGINT)
    assert await supervisor.exit_status() == 128 + signal.SIGINT
    # exit_status() also waited for the shared stderr to close: the children are gone
    # too, each having stopped at once itself (told "now" through its stdin).
    for pid in children:
        assert supervisor.child_events("stopping_now", pid)
        assert not supervisor.child_events("stopped", pid)  # no drain ran to its end
    assert supervisor.child_events("stopping_now", supervisor.proc.pid)
    assert await client.llen(f"{meetq_namespace}:done") == 0


async def test_the_supervisor_gives_up_on_a_child_that_keeps_dying_at_once(
    spawn: Any, mq: meetq.MessageQueue, client: redis.asyncio.Redis, meetq_namespace: str
) -> None:
    from meetq.cli._supervisor import MAX_QUICK_FAILURES

    supervisor = await spawn("--processes", "2", app="_cli_app:fails_in_worker_1")
    assert await supervisor.exit_status() == 1
    exits = supervisor.events("worker_exited")
    failed = [r for r in exits if r["worker_index"] == 1]
    assert [r["exit_status"] for r in failed] == [1] * MAX_QUICK_FAILURES
    restarts = [r for r in supervisor.events("worker_restarting") if r["worker_index"] == 1]
    assert len(restarts) == MAX_QUICK_FAILURES - 1  # the last failure is not restarted
    assert any("giving up" in r["message"] for r in supervisor.records)
    # The healthy child was started once and drained when the supervisor gave up.
    assert [r["exit_status"] for r in exits if r["worker_index"] == 0] == [0]
    assert not [r for r in supervisor.events("worker_restarting") if r["worker_index"] == 0]


async def test_children_of_a_sigkilled_supervisor_drain_by_themselves(
    spawn: Any, mq: meetq.MessageQueue, client: redis.asyncio.Redis, meetq_namespace: str
) -> None:
    ids = set(await mq.publish_batch(_jobs(6, hold=True)))
    supervisor = await spawn("--processes", "2")
    children = [r["child_pid"] for r in await supervisor.wait_event("worker_started", 2)]
    await _wait_len(client, meetq_namespace, "started", 6)  # three held in each child
    try:
        supervisor.signal(signal.SIGKILL)
        # Their stdin pipe from the supervisor closed: each child drains as after a
        # first signal (the log says why). Only then may the held handlers finish.
        await supervisor.wait_event("draining", 2)
        for pid in children:
            (drain,) = supervisor.child_events("draining", pid)
            assert "the supervisor went away" in drain["message"]
        await client.set(f"{meetq_namespace}:gate", 1)
        # The children share the supervisor's stderr: end of file there means every
        # one of them has exited (no polling of pids: an orphan's zombie may linger).
        await supervisor.stderr_closed()
    finally:
        for pid in children:  # a failed test leaves no orphan behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert await asyncio.wait_for(supervisor.proc.wait(), BOUND) == -signal.SIGKILL
    for pid in children:
        assert supervisor.child_events("stopped", pid)  # each drained to its end
    done = await _records(client, meetq_namespace, "done")
    assert sorted(i for i, _, _ in done) == sorted(ids)  # each handled once, attempt 1
    assert {a for _, a, _ in done} == {1}
