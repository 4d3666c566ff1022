"""``python -m meetq``: the ``meetq`` command (docs/cli.md)."""

from meetq.cli import main

main(prog_name="meetq")
