"""``meetq stats``, ``dlq``, ``queue``, ``publish`` and ``check``: look inside and maintain
the queues a config names (docs/cli.md).

Design (why it looks like this): every command goes through the public inspection API
(``QueueManager.inspect``, ``MessageQueue.inspect``, ``dead_letters``,
``requeue_dead_letters``, ``clear``...), never a backend's insides, so what it prints is
what a dashboard would read. Each command builds the manager from ``--config`` without
starting it (nothing is consumed), runs one coroutine, and closes the backends. Long
requeues and purges go in chunks of ``CHUNK``: one bounded backend call each (a huge
Lua script would block Redis for everyone), with a progress bar once there is more than
one chunk. Exit status: 0 done, 1 the backend failed or did not answer, 2 bad options or
config (click's own convention).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click

from meetq.core._durations import parse_duration
from meetq.core.errors import ConfigError, MeetqError
from meetq.core.types import DeadLetter, Message, Priority
from meetq.manager import QueueManager, initialize_queue_system
from meetq.queue import MessageQueue, QueueInfo, traceback_summary

__all__ = ["CHUNK", "check", "dlq", "publish", "queue", "stats"]

#: Dead letters requeued or messages purged per backend call.
CHUNK = 500

T = TypeVar("T")

_SETTINGS: dict[str, Any] = {"max_content_width": 100}

_config_option = click.option(
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="The meetq config file (YAML or JSON) naming the backend and the queue.",
)


def _fail(message: str, status: int = 1) -> NoReturn:
    click.echo(f"meetq: {message}", err=True)
    raise SystemExit(status)


def _run(config: str, action: Callable[[QueueManager], Awaitable[T]]) -> T:
    """Build the manager from ``config`` (not started), run ``action``, close it."""

    async def main() -> T:
        try:
            manager = await initialize_queue_system(config)
        except ConfigError as exc:
            _fail(str(exc), 2)
        try:
            return await action(manager)
        finally:
            await manager.stop()

    try:
        return asyncio.run(main())
    except MeetqError as exc:
        _fail(str(exc))


def _queue_of(manager: QueueManager) -> MessageQueue:
    mq = manager.get_message_queue()
    if mq is None:
        _fail("message_queue.enabled is false in this config: there is no queue", 2)
    return mq


# -- stats ------------------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (the backend does not tell)"
    if not seconds:
        return "none ready"
    return f"{seconds:.3f}s waiting" if seconds < 60 else f"{seconds / 60:.1f}m waiting"


def _format_info(info: QueueInfo) -> str:
    waiting = ", ".join(f"{name} {n}" for name, n in info.waiting.items())
    totals = ", ".join(f"{name} {n}" for name, n in info.totals.items())
    lines = [
        f"queue {info.queue!r} ({info.backend})",
        f"  waiting    {info.waiting_total} ({waiting})",
        f"  delayed    {info.delayed}",
        f"  running    {info.running}",
        f"  dead       {info.dead}",
        f"  unhandled  {info.unhandled}",
        f"  oldest     {_age(info.oldest_age)}",
        f"  totals     {totals}",
    ]
    if not info.handlers:
        lines.append("  handlers   none live")
    for i, (message_type, workers) in enumerate(info.handlers.items()):
        label = "  handlers   " if i == 0 else " " * 13
        names = ", ".join(workers) if workers else "(a worker that gave no name)"
        lines.append(f"{label}{message_type}: {names}")
    return "\n".join(lines)


@click.command(
    context_settings=_SETTINGS,
    epilog="""\b
Examples:
  meetq stats --config config.yaml
  meetq stats --config config.yaml --json
  meetq stats --config config.yaml --watch 2
""",
)
@_config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object: queue name -> figures.")
@click.option(
    "--watch",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Look again every SECONDS until Ctrl-C (with --json: one object a line).",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="With --watch: stop after this many looks.",
)
def stats(config: str, as_json: bool, watch: float | None, count: int | None) -> None:
    """Per queue: waiting by priority, delayed, running, dead letters, totals, and each
    handled type with its live workers. Reads only; consumes nothing."""

    async def show(manager: QueueManager) -> None:
        looks = 0
        while True:
            infos = await manager.inspect()
            if as_json:
                click.echo(json.dumps({name: i.to_dict() for name, i in infos.items()}))
            else:
                if watch is not None:
                    click.echo(f"-- {datetime.datetime.now().isoformat(timespec='seconds')}")
                for info in infos.values():
                    click.echo(_format_info(info))
            looks += 1
            if watch is None or (count is not None and looks >= count):
                return
            await asyncio.sleep(watch)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how --watch is stopped
        _run(config, show)


# -- dead letters -----------------------------------------------------------------------


def _when(unix: float) -> str:
    if not unix:
        return "?"
    moment = datetime.datetime.fromtimestamp(unix, tz=datetime.UTC)
    return moment.isoformat(timespec="seconds")


def _letter_dict(letter: DeadLetter, *, full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": letter.id,
        "type": letter.type,
        "attempts": letter.attempts,
        "failed_at": letter.failed_at,
        "error": letter.error,
        "traceback_summary": traceback_summary(letter.traceback),
    }
    if full:
        out["traceback"] = letter.traceback
        message = letter.message
        out["message"] = None if message is None else _message_dict(message)
        out["raw"] = None if letter.raw is None else letter.raw.decode("utf-8", "replace")
    return out


def _message_dict(message: Message) -> dict[str, Any]:
    return {
        "type": message.type,
        "priority": message.priority.name.lower(),
        "payload": dict(message.payload),
        "headers": dict(message.headers),
        "source": message.source,
    }


@click.group(context_settings=_SETTINGS)
def dlq() -> None:
    """Dead letters: list, show, requeue, purge."""


@dlq.command(
    "list",
    epilog="""\b
Examples:
  meetq dlq list --config config.yaml
  meetq dlq list --config config.yaml --limit 20 --json
""",
)
@_config_option
@click.option(
    "--limit",
    type=click.IntRange(0, 10_000),
    default=100,
    show_default=True,
    help="At most this many, oldest first.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
def dlq_list(config: str, limit: int, as_json: bool) -> None:
    """The oldest dead letters: id, type, attempts, when, error and where it was raised."""

    async def show(manager: QueueManager) -> None:
        mq = _queue_of(manager)
        letters = await mq.dead_letters(limit)
        total = await mq.dead_letter_count()
        for letter in letters:
            if as_json:
                click.echo(json.dumps(_letter_dict(letter, full=False)))
                continue
            click.echo(
                f"{letter.id}  {letter.type or '?'}  attempts {letter.attempts}  "
                f"{_when(letter.failed_at)}"
            )
            click.echo(f"    error: {letter.error}")
            summary = traceback_summary(letter.traceback)
            if summary and summary != letter.error:
                click.echo(f"    at:    {summary}")
        if not as_json:
            click.echo(f"{len(letters)} of {total} dead letters in queue {mq.name!r}")

    _run(config, show)


@dlq.command(
    "show",
    epilog="""\b
Example:
  meetq dlq show 0b9f3c2e4d --config config.yaml
""",
)
@click.argument("message_id")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def dlq_show(message_id: str, config: str, as_json: bool) -> None:
    """One dead letter in full: error, traceback and the message as published
    (looked for among the 10,000 oldest). Exit status 1 when there is none."""

    async def show(manager: QueueManager) -> DeadLetter | None:
        return await _queue_of(manager).dead_letter(message_id)

    letter = _run(config, show)
    if letter is None:
        _fail(f"no dead letter with id {message_id!r} (among the 10,000 oldest)")
    data = _letter_dict(letter, full=True)
    if as_json:
        click.echo(json.dumps(data))
        return
    click.echo(f"id:         {letter.id}")
    click.echo(f"type:       {letter.type or '?'}")
    click.echo(f"attempts:   {letter.attempts}")
    click.echo(f"failed at:  {_when(letter.failed_at)}")
    click.echo(f"error:      {letter.error}")
    if data["message"] is not None:
        click.echo(f"message:    {json.dumps(data['message'])}")
    else:
        click.echo(f"raw body:   {data['raw']!r} (it could not be decoded)")
    click.echo("traceback:" + ("\n" + letter.traceback.rstrip() if letter.traceback else " none"))


@contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr once the work takes more than one chunk."""
    if total <= CHUNK:
        yield lambda n: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


async def _in_chunks(
    total: int, label: str, step: Callable[[int], Awaitable[int]]
) -> int:
    """Call ``step(n)`` with chunks of at most ``CHUNK`` until ``total`` are done or a
    step does nothing; return how many were done."""
    done = 0
    with _progress(total, label) as advance:
        while done < total:
            n = await step(min(CHUNK, total - done))
            if n <= 0:
                break
            done += n
            advance(n)
    return done


def _confirm(yes: bool, question: str) -> None:
    if not yes and not click.confirm(question, err=True):
        _fail("nothing removed", 1)


@dlq.command(
    "requeue",
    epilog="""\b
Examples:
  meetq dlq requeue --config config.yaml
  meetq dlq requeue --config config.yaml --max 5 --type transcode
""",
)
@_config_option
@click.option(
    "--max",
    "max_count",
    type=click.IntRange(min=0),
    default=None,
    help="At most this many, oldest first  [default: all of them].",
)
@click.option("--type", "message_type", default=None, help="Only dead letters of this type.")
def dlq_requeue(config: str, max_count: int | None, message_type: str | None) -> None:
    """Put dead letters back in the queue, attempts reset. Counts what was there when it
    began, so letters that die again meanwhile are not requeued twice."""

    async def requeue(manager: QueueManager) -> tuple[str, int]:
        mq = _queue_of(manager)
        total = await mq.dead_letter_count()
        if max_count is not None:
            total = min(total, max_count)

        def step(n: int) -> Awaitable[int]:
            return mq.requeue_dead_letters(n, message_type=message_type)

        return mq.name, await _in_chunks(total, "requeueing", step)

    name, moved = _run(config, requeue)
    click.echo(f"requeued {moved} dead letters in queue {name!r}")


@dlq.command(
    "purge",
    epilog="""\b
Example:
  meetq dlq purge --config config.yaml --yes
""",
)
@_config_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(config: str, yes: bool) -> None:
    """Remove every dead letter (the ones there when it began), oldest first."""
    _confirm(yes, "Remove every dead letter of this queue?")

    async def purge(manager: QueueManager) -> tuple[str, int]:
        mq = _queue_of(manager)
        total = await mq.dead_letter_count()
        return mq.name, await _in_chunks(total, "purging", mq.clear_dead_letters)

    name, removed = _run(config, purge)
    click.echo(f"removed {removed} dead letters from queue {name!r}")


# -- the queue --------------------------------------------------------------------------


def _priority(value: str | None) -> Priority | None:
    if value is None:
        return None
    try:
        return Priority.parse(int(value) if value.strip().isdigit() else value)
    except MeetqError as exc:
        raise click.BadParameter(str(exc)) from None


_PRIORITY_HELP = "critical, high, normal or low (or 3..0)."


@click.group(context_settings=_SETTINGS)
def queue() -> None:
    """The waiting messages: length, purge."""


@queue.command(
    "length",
    epilog="""\b
Examples:
  meetq queue length --config config.yaml
  meetq queue length --config config.yaml --priority high
""",
)
@_config_option
@click.option("--priority", default=None, help=f"Count one priority only: {_PRIORITY_HELP}")
def queue_length(config: str, priority: str | None) -> None:
    """Print how many messages wait (ready or delayed)."""
    level = _priority(priority)

    async def length(manager: QueueManager) -> int:
        return await _queue_of(manager).queue_length(level)

    click.echo(_run(config, length))


@queue.command(
    "purge",
    epilog="""\b
Example:
  meetq queue purge --config config.yaml --yes
""",
)
@_config_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def queue_purge(config: str, yes: bool) -> None:
    """Remove every waiting message (the ones there when it began); running ones finish."""
    _confirm(yes, "Remove every waiting message of this queue?")

    async def purge(manager: QueueManager) -> tuple[str, int]:
        mq = _queue_of(manager)
        total = await mq.queue_length()
        return mq.name, await _in_chunks(total, "purging", mq.clear)

    name, removed = _run(config, purge)
    click.echo(f"removed {removed} waiting messages from queue {name!r}")


@click.command(
    context_settings=_SETTINGS,
    epilog="""\b
Examples:
  meetq publish transcode --payload '{"file": "a.mp4"}' --config config.yaml
  meetq publish report --payload '{}' --priority high --delay 10m --config config.yaml
""",
)
@click.argument("message_type")
@_config_option
@click.option("--payload", default="{}", show_default=True, help="The payload: a JSON object.")
@click.option("--priority", default="normal", show_default=True, help=_PRIORITY_HELP)
@click.option(
    "--delay",
    default=None,
    help="Hold it back this long: seconds, or a duration such as 30s, 10m, 2h.",
)
def publish(
    message_type: str, config: str, payload: str, priority: str, delay: str | None
) -> None:
    """Publish one message of MESSAGE_TYPE and print its id."""
    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None
    if not isinstance(body, dict):
        raise click.BadParameter("expected a JSON object", param_hint="--payload")
    seconds: float | None = None
    if delay is not None:
        try:
            seconds = parse_duration(
                float(delay) if _is_number(delay) else delay, number_unit=1.0
            )
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--delay") from None
    level = _priority(priority)
    try:
        message = Message(type=message_type, payload=body, priority=level or Priority.NORMAL)
    except MeetqError as exc:
        raise click.BadParameter(str(exc)) from None

    async def send(manager: QueueManager) -> str:
        return await _queue_of(manager).publish(message, delay=seconds)

    click.echo(_run(config, send))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@click.command(
    context_settings=_SETTINGS,
    epilog="""\b
Example (a Kubernetes readiness probe):
  meetq check --config /etc/meetq/config.yaml --timeout 3
""",
)
@_config_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the answer.",
)
def check(config: str, timeout: float) -> None:
    """Exit 0 when the queue's backend answers within --timeout seconds, else 1."""

    async def probe(manager: QueueManager) -> tuple[str, str, float]:
        mq = _queue_of(manager)
        began = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                await mq.inspect()
        except TimeoutError:
            _fail(f"queue {mq.name!r} on {mq.backend.name}: no answer within {timeout:g}s")
        return mq.name, mq.backend.name, time.monotonic() - began

    name, backend, took = _run(config, probe)
    click.echo(f"ok: queue {name!r} on {backend} answered in {took * 1000:.1f} ms")
