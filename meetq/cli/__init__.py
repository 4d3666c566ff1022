"""The ``meetq`` command (``pip install 'meetq[cli]'``; docs/cli.md).

The group stays small: every command lives in a module of its own and is added below
(``_worker.py``: ``worker``; ``_admin.py``: ``stats``, ``dlq``, ``queue``, ``publish``,
``check``). Reached as the ``meetq`` console script and as ``python -m meetq``.
"""

from __future__ import annotations

import sys

try:
    import click
except ModuleNotFoundError:  # the extra is missing: say how to get it, no traceback
    sys.stderr.write(
        "meetq: the command line needs click; install it with: pip install 'meetq[cli]'\n"
    )
    raise SystemExit(2) from None

from meetq import __version__
from meetq.cli._admin import check, dlq, publish, queue, stats
from meetq.cli._worker import worker

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meetq")
def main() -> None:
    """Run meetq workers and look inside their queues."""


for _command in (worker, stats, dlq, queue, publish, check):
    main.add_command(_command)
