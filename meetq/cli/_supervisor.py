"""``meetq worker --processes N``: N worker processes kept running by a supervisor.

Design (why it looks like this):

- Each child is ``python -m meetq worker APP ... --supervised``: a fresh interpreter, so
  nothing of the supervisor's (event loop, sockets, threads) is inherited by a fork.
  Children share the supervisor's stderr; with ``--metrics-port P`` child ``i`` (from
  0) serves on ``P + i``.
- Requests reach children through a pipe on their stdin (``drain``, ``now SIG``), not as
  signals, because they often get the signal directly as well (see ``_run``). A child
  whose supervisor dies sees end of file and drains.
- A child that dies while the supervisor is not stopping is started again after
  ``Backoff(RESTART_BASE, RESTART_MAX)`` for its failure count; a child that stayed up
  ``STABLE_AFTER`` seconds starts the count again. After ``MAX_QUICK_FAILURES`` quick
  failures in a row of one child the supervisor gives up: the others drain, exit 1.
  Exit status 2 (bad APP, config or options) is not retried: it would fail again.
- ``--burst``: a child that exits 0 is done and not replaced; the supervisor exits 0
  once every child has.
- First stop request: every child drains; the supervisor exits 0 if every child exited
  0, else 1. Second: children are told to stop at once, the ones still there after
  ``KILL_AFTER`` seconds are killed, and the supervisor exits ``128 + signal``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time

from meetq.cli._run import EXIT_FAILED, EXIT_OK, EXIT_USAGE, StopRequests, WorkerOptions
from meetq.core._backoff import Backoff

__all__ = ["MAX_QUICK_FAILURES", "STABLE_AFTER", "run_supervisor"]

log = logging.getLogger("meetq.cli")

RESTART_BASE = 0.5  # seconds before the first restart of a child
RESTART_MAX = 30.0  # the longest wait between restarts
STABLE_AFTER = 30.0  # a child up this long starts its failure count again
MAX_QUICK_FAILURES = 5  # quick failures in a row of one child before giving up
KILL_AFTER = 5.0  # after "now", seconds before a child still there is killed


class _Supervisor:
    def __init__(self, options: WorkerOptions, processes: int, child_args: list[str]) -> None:
        self.options = options
        self.processes = processes
        self.child_args = child_args
        self.stop = StopRequests("supervisor")
        self.stop.on_second.append(self._now)
        self.children: dict[int, asyncio.subprocess.Process] = {}
        self.backoff = Backoff(RESTART_BASE, RESTART_MAX)
        self.give_up: int | None = None  # the exit status when a child made us stop

    def _command(self, index: int) -> list[str]:
        args = [sys.executable, "-m", "meetq", "worker", self.options.app, *self.child_args]
        if self.options.metrics_port is not None:
            args += ["--metrics-port", str(self.options.metrics_port + index)]
        return [*args, "--supervised"]

    def _tell(self, line: str) -> None:
        for proc in list(self.children.values()):
            if proc.returncode is None and proc.stdin is not None:
                with contextlib.suppress(Exception):  # it just died: nothing to tell
                    proc.stdin.write(line.encode())

    def _drain_all(self) -> None:
        self._tell("drain\n")

    def _now(self, signum: int) -> None:
        # Called from StopRequests.now just before os._exit: tell, wait a little, kill.
        self._tell(f"now {signum}\n")
        pids = [p.pid for p in self.children.values() if p.returncode is None]
        deadline = KILL_AFTER
        step = 0.05
        while pids and deadline > 0:
            pids = [pid for pid in pids if _alive(pid)]
            if pids:
                # A plain sleep is right here: the loop is about to be abandoned.
                time.sleep(step)
                deadline -= step
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _fail(self, status: int) -> None:
        if self.give_up is None:
            self.give_up = status
        self.stop.first("a worker process cannot run")

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stop.requested.wait()

    async def _slot(self, index: int) -> int:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            proc = await asyncio.create_subprocess_exec(
                *self._command(index),
                stdin=asyncio.subprocess.PIPE,
                env={**os.environ, "MEETQ_WORKER_INDEX": str(index)},
            )
            self.children[index] = proc
            if self.stop.requested.is_set():  # stopped while it was being started
                self._tell("drain\n")
            started = loop.time()
            log.info("meetq: worker process %d started (pid %d)", index, proc.pid,
                     extra={"event": "worker_started", "worker_index": index,
                            "child_pid": proc.pid})
            status = await proc.wait()
            log_at = logging.INFO if status == 0 else logging.WARNING
            log.log(log_at, "meetq: worker process %d (pid %d) exited with status %d",
                    index, proc.pid, status,
                    extra={"event": "worker_exited", "worker_index": index,
                           "child_pid": proc.pid, "exit_status": status})
            if self.stop.requested.is_set():
                return status
            if status == EXIT_OK and self.options.burst:
                return status
            if status == EXIT_USAGE:
                log.error("meetq: worker process %d cannot run (exit status 2): stopping",
                          index)
                self._fail(EXIT_USAGE)
                return status
            failures = failures + 1 if loop.time() - started < STABLE_AFTER else 1
            if failures >= MAX_QUICK_FAILURES:
                log.error("meetq: worker process %d failed %d times in a row, each within "
                          "%.0fs of starting: giving up", index, failures, STABLE_AFTER)
                self._fail(EXIT_FAILED)
                return status
            delay = self.backoff.delay(failures)
            log.warning("meetq: restarting worker process %d in %.1fs", index, delay,
                        extra={"event": "worker_restarting", "worker_index": index})
            await self._sleep_unless_stopping(delay)
            if self.stop.requested.is_set():
                return status

    async def run(self) -> int:
        self.stop.install()
        slots = [asyncio.create_task(self._slot(i)) for i in range(self.processes)]
        drain = asyncio.create_task(self.stop.requested.wait())
        pending = set(slots)
        while pending:
            done, pending = await asyncio.wait(
                pending | {drain}, return_when=asyncio.FIRST_COMPLETED
            )
            pending.discard(drain)
            if drain in done:
                self._drain_all()
                drain = asyncio.create_task(asyncio.Event().wait())  # drained once
        drain.cancel()
        statuses = [slot.result() for slot in slots]
        if self.give_up is not None:
            return self.give_up
        if all(s == EXIT_OK for s in statuses):
            log.info("meetq: supervisor stopped: every worker process drained",
                     extra={"event": "stopped"})
            return EXIT_OK
        return EXIT_FAILED


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return waited == 0


def run_supervisor(options: WorkerOptions, processes: int, child_args: list[str]) -> int:
    """Run ``processes`` supervised worker processes; return the exit status."""
    try:
        return asyncio.run(_Supervisor(options, processes, child_args).run())
    except KeyboardInterrupt:  # Ctrl-C before the loop's handler was in place
        return 128 + signal.SIGINT
