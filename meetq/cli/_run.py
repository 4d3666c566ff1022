"""One worker process of ``meetq worker``: load APP, run it, drain on a signal.

Design (why it looks like this):

- Stop requests count up. The first (SIGTERM, SIGINT, or the supervisor's ``drain``)
  starts a graceful drain: no new claims, running handlers get ``--grace`` seconds to
  finish and settle, what is left is released uncharged (``QueueManager.stop``), exit 0.
  The second stops at once with ``os._exit(128 + signal)``: nothing more runs, and the
  leases of unfinished messages expire as after a crash.
- The signals are the event loop's (``add_signal_handler``), installed before APP is
  even imported, so Ctrl-C never surfaces as a ``KeyboardInterrupt`` traceback.
- A supervised child (``--processes``) also listens to its stdin, a pipe from the
  supervisor: ``drain`` is a first request, ``now SIG`` a second, and end of file (the
  supervisor died) a first. The supervisor relays a signal through the pipe rather than
  as a signal because the child often gets the same signal directly as well (Ctrl-C
  reaches the whole process group, systemd signals the whole cgroup): a request that
  arrives twice by two paths still counts once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import attrs

from meetq.cli._app import AppError, load_app
from meetq.core.errors import (
    BackendNotFoundError,
    ConfigError,
    MeetqError,
    MissingDependencyError,
    ValidationError,
)
from meetq.manager import QueueManager

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "WorkerOptions", "run_worker"]

log = logging.getLogger("meetq.cli")

EXIT_OK = 0  # drained after a stop request, or --burst found nothing more to do
EXIT_FAILED = 1  # APP or the backend failed while starting or running: worth a restart
EXIT_USAGE = 2  # bad arguments, APP or config: a restart would fail the same way

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@attrs.frozen(kw_only=True)
class WorkerOptions:
    """The options of ``meetq worker`` a worker process runs with."""

    app: str
    config: str | None = None
    burst: bool = False
    grace: float | None = None
    metrics_port: int | None = None
    supervised: bool = False


def flush_logs() -> None:
    """Write out what the log handlers hold (before ``os._exit``, which skips it)."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()


class StopRequests:
    """Counts stop requests: the first sets ``requested``, the second exits at once."""

    def __init__(self, what: str) -> None:
        self.requested = asyncio.Event()
        self.count = 0
        self._what = what
        self.on_second: list[Any] = []  # callables run just before exiting at once

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in _STOP_SIGNALS:
            loop.add_signal_handler(signum, self.signal, signum)

    def signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        self.count += 1
        if self.count == 1:
            self.first(f"{name} received")
        else:
            self.now(signum, f"second stop request ({name})")

    def first(self, reason: str) -> None:
        if self.requested.is_set():
            return
        self.count = max(self.count, 1)
        log.warning("meetq: %s: %s: %s", self._what, reason, _DRAIN_TEXT,
                    extra={"event": "draining"})
        self.requested.set()

    def now(self, signum: int, reason: str) -> None:
        log.error("meetq: %s: %s: stopping at once; unfinished messages come back when "
                  "their lease runs out", self._what, reason, extra={"event": "stopping_now"})
        for action in self.on_second:
            with contextlib.suppress(Exception):
                action(signum)
        flush_logs()
        os._exit(128 + signum)


_DRAIN_TEXT = (
    "draining (no new claims; running handlers finish within the grace, the rest go "
    "back uncharged); a second signal stops at once"
)


async def follow_supervisor(stop: StopRequests) -> None:
    """Read the supervisor's requests from stdin (see the module docstring)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode(errors="replace").split()
        if not line:
            stop.first("the supervisor went away")
            return
        if line[0] == "drain":
            stop.first("the supervisor asks to stop")
        elif line[0] == "now":
            signum = int(line[1]) if len(line) > 1 and line[1].isdigit() else signal.SIGTERM
            stop.now(signum, "the supervisor got a second stop request")


def serve_metrics(port: int, qm: QueueManager) -> Callable[[], None]:
    """Measure ``qm``'s components and serve them on ``port`` (before ``start()``, so the
    middleware is in place for the first message); return what stops serving.

    ``meetq.observability`` is imported only here: without ``--metrics-port`` a worker
    never loads prometheus-client."""
    from meetq.observability import serve_metrics as serve

    try:
        server = serve(port, qm)
    except MeetqError as exc:  # prometheus-client missing: the error carries the command
        raise AppError(f"--metrics-port: {exc}") from None
    except OSError as exc:
        raise AppError(f"--metrics-port: cannot listen on port {port}: {exc}") from None
    log.info("meetq: metrics on http://0.0.0.0:%d/metrics", server.port,
             extra={"event": "metrics"})
    return server.close


def run_worker(options: WorkerOptions) -> int:
    """Run one worker in this process; return its exit status."""
    try:
        return asyncio.run(_worker_main(options))
    except KeyboardInterrupt:  # Ctrl-C before the loop's handler was in place
        return 128 + signal.SIGINT


async def _load(options: WorkerOptions) -> QueueManager | int:
    try:
        return await load_app(options.app, options.config)
    except AppError as exc:
        log.error("meetq: %s", exc)
        return EXIT_USAGE
    except (ConfigError, ValidationError, BackendNotFoundError, MissingDependencyError) as exc:
        log.error("meetq: APP=%r: %s", options.app, exc)
        return EXIT_USAGE
    except (ImportError, SyntaxError):
        log.exception("meetq: APP=%r could not be imported", options.app)
        return EXIT_USAGE
    except Exception:
        log.exception("meetq: APP=%r failed while building its QueueManager", options.app)
        return EXIT_FAILED


async def _worker_main(options: WorkerOptions) -> int:
    stop = StopRequests("worker")
    stop.install()
    supervisor = (
        asyncio.create_task(follow_supervisor(stop)) if options.supervised else None
    )
    try:
        return await _work(options, stop)
    finally:
        if supervisor is not None:
            supervisor.cancel()


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _work(options: WorkerOptions, stop: StopRequests) -> int:
    loaded = await _load(options)
    if isinstance(loaded, int):
        return loaded
    qm = loaded
    mq = qm.get_message_queue()
    if options.burst and (mq is None or not mq.handled_types):
        log.error("meetq: --burst: APP=%r has no message queue handlers to run until the "
                  "queue is empty", options.app)
        await qm.stop(grace=0)
        return EXIT_USAGE
    close_metrics: Callable[[], None] | None = None
    if options.metrics_port is not None:
        try:
            close_metrics = serve_metrics(options.metrics_port, qm)
        except AppError as exc:
            log.error("meetq: %s", exc)
            await qm.stop(grace=0)
            return EXIT_USAGE
    try:
        return await _run_started(options, stop, qm)
    finally:
        if close_metrics is not None:
            close_metrics()


async def _run_started(options: WorkerOptions, stop: StopRequests, qm: QueueManager) -> int:
    mq = qm.get_message_queue()
    starting = asyncio.create_task(qm.start())
    await _first(asyncio.shield(starting), stop.requested.wait())
    if not starting.done():  # asked to stop while starting (a backend not answering)
        starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
    elif starting.exception() is not None:
        error = starting.exception()
        # A MeetqError says what to do in its message; anything else needs its traceback.
        log.error(
            "meetq: worker could not start: %s", error, exc_info=not isinstance(error, MeetqError)
        )
        await qm.stop(grace=0)
        return EXIT_FAILED
    else:
        log.info(
            "meetq: worker started: APP=%s, queue %r, handling %s%s",
            options.app,
            mq.name if mq is not None else None,
            ", ".join(mq.handled_types) if mq is not None and mq.handled_types else "nothing",
            " (burst: exits once nothing is ready)" if options.burst else "",
            extra={"event": "started"},
        )
        if options.burst and mq is not None:
            await _first(mq.wait_idle(), stop.requested.wait())
            if not stop.requested.is_set():
                log.info("meetq: burst: nothing ready for the handlers; stopping",
                         extra={"event": "burst_done"})
        else:
            await stop.requested.wait()
    await qm.stop(grace=options.grace)
    log.info("meetq: worker stopped", extra={"event": "stopped"})
    return EXIT_OK
