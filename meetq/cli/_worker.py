"""``meetq worker APP``: run a QueueManager's handlers until told to stop (docs/cli.md)."""

from __future__ import annotations

import click

from meetq.cli._logging import configure_logging
from meetq.cli._run import WorkerOptions, run_worker
from meetq.cli._supervisor import run_supervisor

__all__ = ["worker"]

_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

_EPILOG = """\b
Examples:
  meetq worker myservice.worker:build --config config.yaml
  meetq worker myservice.worker:build --config config.yaml --processes 4 --grace 60
  meetq worker myservice.worker:build --burst --log-format json

\b
APP is module:attribute naming a QueueManager, or a callable (plain or async)
returning one with its handlers registered; a callable that takes a parameter
gets the --config path (None without --config).

\b
Exit status: 0 after a graceful drain (or --burst found nothing more ready),
1 when APP or the backend failed, 2 for bad options, APP or config,
128+N after a second signal N.
"""


@click.command(epilog=_EPILOG, context_settings={"max_content_width": 100})
@click.argument("app")
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Config file handed to APP's factory.",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes; more than 1 runs a supervisor that restarts a dead one.",
)
@click.option(
    "--burst", is_flag=True, help="Exit 0 once nothing is ready for the handlers and none runs."
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds running handlers get to finish on stop  [default: each section's "
    "shutdown_grace, message_queue: 30].",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus metrics on this port (with --processes N: PORT..PORT+N-1); "
    "needs meetq[prometheus].",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object a line, with every extra field of the record.",
)
@click.option(
    "--log-level",
    type=click.Choice(_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.option("--supervised", is_flag=True, hidden=True)  # a child of --processes
def worker(
    app: str,
    config: str | None,
    processes: int,
    burst: bool,
    grace: float | None,
    metrics_port: int | None,
    log_format: str,
    log_level: str,
    supervised: bool,
) -> None:
    """Run APP's handlers until SIGTERM or SIGINT (Ctrl-C), then drain gracefully.

    On the first signal no new message is claimed, running handlers get --grace
    seconds to finish and settle, and what is left goes back to the queue without
    charging an attempt; then exit 0. A second signal stops at once.
    """
    configure_logging("json" if log_format == "json" else "text", log_level)
    options = WorkerOptions(
        app=app,
        config=config,
        burst=burst,
        grace=grace,
        metrics_port=metrics_port,
        supervised=supervised,
    )
    if processes == 1:
        raise SystemExit(run_worker(options))
    child_args = ["--log-format", log_format, "--log-level", log_level]
    if config is not None:
        child_args += ["--config", config]
    if burst:
        child_args.append("--burst")
    if grace is not None:
        child_args += ["--grace", repr(grace)]
    raise SystemExit(run_supervisor(options, processes, child_args))
