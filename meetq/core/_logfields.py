"""The ``extra`` fields every log record on a message's path carries.

A record about one message (a failed attempt, a timeout, a drop, a lost lease) gets
these as attributes (``record.queue``, ``record.message_id``, ...), so a JSON formatter
(``meetq worker --log-format json``) prints them as fields and a log pipeline can filter
by message without parsing the text. ``attempt`` is None where the record is about a
lease rather than one attempt.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LOG_FIELDS", "message_log_fields"]

LOG_FIELDS = ("queue", "message_id", "type", "attempt", "worker")


def message_log_fields(
    queue: str, worker: str, message_id: str, message_type: str, attempt: int | None
) -> dict[str, Any]:
    """The ``extra=`` mapping of a record about one message."""
    return {
        "queue": queue,
        "message_id": message_id,
        "type": message_type,
        "attempt": attempt,
        "worker": worker,
    }
